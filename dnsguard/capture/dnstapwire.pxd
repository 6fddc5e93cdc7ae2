# Cython declarations for dnstapwire.py (see setup.py): the payload walked over a C pointer,
# the fields it finds as C fields of the one scanner a source reuses.
cimport cython

cdef unsigned long long _MASK64, _MASK32
cdef Py_ssize_t MAX_GROUP_DEPTH
cdef unsigned long long MAX_PORT


cdef class DnstapScanner:
    cdef public object c, now
    cdef public double last_ts, ts
    cdef public bint saw_client, tcp
    cdef public bytes src, dst
    cdef public int sport, dport
    cdef public Py_ssize_t ws, we
    cdef Py_ssize_t _p, _qa0, _qa1, _ra0, _ra1, _qm0, _qm1, _rm0, _rm1
    cdef bint _bad, _has_message
    cdef int _mt, _family, _proto
    cdef unsigned long long _qport, _rport, _qsec, _rsec
    cdef unsigned int _qnsec, _rnsec

    cdef void _reset(self) noexcept

    @cython.locals(buf=cython.p_uchar, mt=int, q=bint, w0=Py_ssize_t, w1=Py_ssize_t,
                   proto=int, sec=cython.ulonglong, nsec=cython.uint, ts=double,
                   qn=Py_ssize_t, rn=Py_ssize_t, six=bint, n=Py_ssize_t, qa=bytes, ra=bytes,
                   qport=cython.ulonglong, rport=cython.ulonglong)
    cpdef bint message(self, bytes data, Py_ssize_t start, Py_ssize_t stop) except -1

    @cython.locals(p=Py_ssize_t, v=cython.ulonglong, shift=int, b=cython.ulonglong)
    cdef unsigned long long _varint(self, const unsigned char* buf, Py_ssize_t stop) noexcept

    @cython.locals(at=Py_ssize_t, tag=cython.ulonglong)
    cdef unsigned long long _tag(self, const unsigned char* buf, Py_ssize_t stop) noexcept

    @cython.locals(n=cython.ulonglong, tag=cython.ulonglong, f=cython.ulonglong, w=int)
    cdef bint _skip(self, const unsigned char* buf, Py_ssize_t stop, int wt,
                    unsigned long long field, Py_ssize_t depth) noexcept

    @cython.locals(tag=cython.ulonglong, f=cython.ulonglong, wt=int, n=cython.ulonglong,
                   end=Py_ssize_t)
    cdef bint _dnstap(self, const unsigned char* buf, Py_ssize_t p, Py_ssize_t stop) noexcept

    @cython.locals(tag=cython.ulonglong, f=cython.ulonglong, wt=int, n=cython.ulonglong,
                   v=cython.ulonglong, e=cython.ulonglong, a=Py_ssize_t)
    cdef bint _message(self, const unsigned char* buf, Py_ssize_t p, Py_ssize_t stop) noexcept


@cython.locals(p=cython.p_uchar, ln=cython.ulonglong)
cpdef Py_ssize_t frames_end(bytes buf, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t max_frame) except -1
