"""The lab's doctests need dnspython (the ``[test]``/``[lab]`` extra): without it, skip them."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("dns") else ["*.py"]
