"""SpiKernel Studio: ``streamlit run app.py`` (``make run`` binds it to 127.0.0.1).

The navigation over the files in ``pages/``; each page draws the shared frame (``ui.widgets.frame``).
"""

import streamlit as st

pages = st.navigation(
    [
        st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:", default=True),
        st.Page("pages/jobs.py", title="Jobs", icon=":material/monitoring:"),
        st.Page("pages/results.py", title="Results", icon=":material/insights:"),
        st.Page("pages/study.py", title="Study", icon=":material/science:"),
        st.Page("pages/model.py", title="Model", icon=":material/hub:"),
    ]
)
pages.run()
