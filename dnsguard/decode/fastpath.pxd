# Cython declarations for fastpath.py (see setup.py): the frame and message readers over a C
# pointer, their results as C fields of the one reused scanner.
cimport cython

cdef int _OPCODE_MASK

cdef bint _either_port(const unsigned char* m, int a, int b) noexcept


cdef class FastScanner:
    cdef public bytes _port_map
    cdef public object _exempt_map
    cdef public bytes src, dst
    cdef public Py_ssize_t q, qend, down, size
    cdef public int qtype, rcode, sport, dport
    cdef public bint qr

    @cython.locals(buf=cython.p_uchar, off=Py_ssize_t, etype=int, total=Py_ssize_t,
                   ulen=Py_ssize_t, udp=Py_ssize_t, alen=Py_ssize_t, a=Py_ssize_t, sport=int,
                   dport=int, em=bytes)
    cpdef bint frame(self, int linktype, bytes data, Py_ssize_t base, Py_ssize_t end) except -1

    @cython.locals(buf=cython.p_uchar, flags=int, an=Py_ssize_t, ns=Py_ssize_t,
                   ar=Py_ssize_t, q=Py_ssize_t, limit=Py_ssize_t, off=Py_ssize_t, ln=int,
                   qtype=int, rcode=int, down=Py_ssize_t, p=Py_ssize_t, i=Py_ssize_t,
                   total=Py_ssize_t, owner_root=bint, rdlen=Py_ssize_t)
    cpdef bint message(self, bytes data, Py_ssize_t start, Py_ssize_t stop) except -1
