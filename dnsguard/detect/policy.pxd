# Cython declarations for policy.py (see setup.py): the per-query suppression check typed.
cdef class Policy:
    cdef public double suppress, rate, _next_log, settle
    cdef public Py_ssize_t max_keys, suppressed, rate_limited, _logged_limited, burst, escalated
    cdef public Py_ssize_t merged
    cdef public object _until, bucket, escalates, out, on_open
    cdef public dict _open
    cdef public bint _merging

    cpdef bint is_suppressed(self, object ident, double ts) except -1
