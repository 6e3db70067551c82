"""SpiKernel Studio: ``streamlit run app.py`` (``make run`` binds it to 127.0.0.1)."""

import streamlit as st

import studio
from engine import api

st.set_page_config(page_title="SpiKernel Studio", page_icon=":material/neurology:", layout="wide")

pages = st.navigation(
    [
        st.Page("views/launch.py", title="Launch", icon=":material/rocket_launch:", default=True),
        st.Page("views/jobs.py", title="Jobs", icon=":material/monitoring:"),
        st.Page("views/results.py", title="Results", icon=":material/insights:"),
        st.Page("views/study.py", title="Study", icon=":material/science:"),
        st.Page("views/model.py", title="Model", icon=":material/hub:"),
    ]
)
try:
    studio.store()
except api.StoreError as e:  # damaged, foreign, unreadable: say so on every page, change nothing
    st.error(f"The experiment database cannot be opened: {studio.escape_markdown(e)}", icon=":material/error:")
    st.caption("Point `SPIKERNEL_DB` at a SpiKernel Studio database (or a new file) and restart the app.")
    st.stop()
studio.sidebar()
pages.run()
