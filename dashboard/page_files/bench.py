"""The page st.navigation runs: a script it executes afresh on every rerun, so it only calls the
view, `dashboard.views.bench`. That module is imported once (its first time with a spinner:
`dashboard.view`), so its functions, classes and caches are made once per server, not once
per click."""

from dashboard import view

view("bench").render_view()
