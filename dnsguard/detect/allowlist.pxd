# Cython declarations for allowlist.py (see setup.py): the suffix walk as a typed C loop.
cimport cython

@cython.locals(k=Py_ssize_t, cand=str)
cpdef object _most_specific(dict suffix, frozenset anchors, str name)
