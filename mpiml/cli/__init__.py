"""The command lines: train, predict, data, plot. They parse arguments, build the run, and turn
any rank's uncaught exception into a job-wide abort; nothing in the library imports them."""
