# Cython declarations for allowlist.py (see setup.py): the suffix walk as a typed C loop, and
# the allowlist an extension type, so the judge's lookup per message is a C call.
cimport cython

@cython.locals(k=Py_ssize_t, dots=Py_ssize_t, c=Py_UCS4)
cpdef bint _last_two(str name, str rd) except -1
@cython.locals(k=Py_ssize_t, cand=str)
cpdef object _most_specific(dict suffix, frozenset anchors, str name)


cdef class Allowlist:
    cdef public list entries, _nets
    cdef public dict _suffix, _cache
    cdef public frozenset _anchors, ports
    cdef public bint _one_label
    cdef public Py_ssize_t cache_size

    @cython.locals(cache=dict)
    cpdef object for_domain(self, str name)
    cpdef object for_name(self, str name, str rd)
