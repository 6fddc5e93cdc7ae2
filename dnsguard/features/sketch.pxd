# Cython declarations for sketch.py (see setup.py): the class's fields as C fields.
cimport cython
from dnsguard.features.namehash cimport hash_str

cdef Py_ssize_t P, _M  # C constants: the register index and rank are C integer operations
cdef double _ALPHA
cdef list _INV2


@cython.locals(t=double, x=double, r=cython.uchar, e=double)
cpdef double _estimate(bytearray regs) except? -1.0


# holds a set of ints or a bytearray: never part of a cycle (no_gc: in sketch.py)
cdef class DistinctCounter:
    cdef public set _set
    cdef public bytearray _regs
    cdef public Py_ssize_t cap
    cdef public long long _est

    cpdef void clear(self)

    cpdef void add(self, str item)

    @cython.locals(s=set, regs=bytearray, i=Py_ssize_t, r=int,
                   w=cython.ulonglong, bit=cython.ulonglong)
    cpdef void add_hash(self, long long hv)
