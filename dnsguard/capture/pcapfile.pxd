# Cython declarations for pcapfile.py (see setup.py): the record scan in C integers.
cimport cython


cdef unsigned int _u32(const unsigned char* p, Py_ssize_t i, bint big) noexcept

@cython.locals(n=Py_ssize_t, p=cython.p_uchar, count=Py_ssize_t, nbytes=Py_ssize_t,
               caplen=Py_ssize_t, end=Py_ssize_t)
cpdef tuple scan_records(bytes buf, Py_ssize_t pos, Py_ssize_t hdr_len, bint big,
                         Py_ssize_t limit)
