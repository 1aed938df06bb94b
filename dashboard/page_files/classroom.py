"""The page st.navigation runs: a script it executes afresh on every rerun, so it only calls the
view, `dashboard.views.classroom`. That module is imported once, so its functions, classes and
caches are made once per server, not once per click."""

from dashboard.views import classroom

classroom.render_view()
