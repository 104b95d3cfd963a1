"""The command line: one module per command, each turning its arguments into the options of one API call."""
