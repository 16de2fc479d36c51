"""Exit codes, the same in every tool (tools/*.py):

0   done.
1   the work started and failed: training diverged, the disk filled up, an export check found
    a mismatch, pruning could not cover a layer, no input image could be read.
2   the command cannot run as given, nothing was started: an unknown or bad argument (argparse's
    own code), a config key or value, a missing file, a file of the wrong kind (an .onnx given
    as --weights), a data set with nothing usable, a folder that already holds a run.
130 interrupted (Ctrl-C); what can be continued is printed.
"""
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130

# VisualDL 2.5.3 lists its tabs in a set's arbitrary order and opens on the first: this fixes
# the order (scalars first) and leaves out the graph of exported models under the log folder
DASHBOARD_FLAGS = "--component_tabs scalar histogram image text"


def dashboard_command(logdir: str) -> str:
    return f"visualdl --logdir {logdir} {DASHBOARD_FLAGS}"
