# Cython declarations for sketch.py (see setup.py): the class's fields as C fields.
cdef class DistinctCounter:
    cdef public object _set
    cdef public object _regs
    cdef public Py_ssize_t cap
    cdef public long long _est
