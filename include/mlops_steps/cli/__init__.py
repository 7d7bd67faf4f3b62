"""``mlops-step <verb>``: the command line every step runs through, one module per stage."""
