# Cython declarations for pcapfile.py (see setup.py): the record scan in C integers.
cimport cython


@cython.locals(a=cython.uint, b=cython.uint, c=cython.uint, d=cython.uint)
cdef unsigned int _u32(const unsigned char* p, Py_ssize_t i, bint big) noexcept

# caplen unsigned: compared with the limit before it is added to an offset (a Py_ssize_t
# caplen would be negative past 2**31 where Py_ssize_t has 32 bits).
@cython.locals(n=Py_ssize_t, p=cython.p_uchar, count=Py_ssize_t, nbytes=Py_ssize_t,
               caplen=cython.uint, end=Py_ssize_t)
cpdef tuple scan_records(bytes buf, Py_ssize_t pos, Py_ssize_t hdr_len, bint big,
                         Py_ssize_t limit)

@cython.locals(n=Py_ssize_t, p=cython.p_uchar, count=Py_ssize_t, nbytes=Py_ssize_t,
               blen=cython.uint, caplen=cython.uint)
cpdef tuple scan_epbs(bytes buf, Py_ssize_t pos, bint big, unsigned int iface,
                      Py_ssize_t limit)
cpdef tuple epb_fields(bytes buf, Py_ssize_t pos, bint big)
