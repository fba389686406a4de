"""Small tools around facerec (demo, helpers); not needed by the nodes."""
