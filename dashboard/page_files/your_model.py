"""The page st.navigation runs: a script it executes afresh on every rerun, so it only calls the
view, `dashboard.views.your_model`. That module is imported once, so its functions, classes and
caches are made once per server, not once per click."""

from dashboard.views import your_model

your_model.render_view()
