"""The AG-UI protocol (``ag-ui-protocol``) over Mainspring agents: what comes in
(``inputs.py``) and the events that go out (``translate.py``); the route is
``routes/agui.py``."""
