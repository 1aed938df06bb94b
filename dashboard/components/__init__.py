"""Custom Streamlit components (`st.components.v2`): HTML, CSS and JavaScript shipped inline with
the app, no build step and nothing fetched from the network."""
