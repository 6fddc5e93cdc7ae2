# Cython declarations for domain.py (see setup.py): the registered-domain lookups an extension
# type, so features.payload's C pass reads the two-label shortcut's sets as C fields.

cdef class RegisteredDomains:
    cdef public object _psl
    cdef public dict _cache, _tlds
    cdef public list _tld_slots
    cdef public Py_ssize_t _cache_size
    cdef public frozenset _tails2, _wild1
    cdef public bint _fast
