# Cython declarations for pipeline.py (see setup.py): the per-packet methods typed, the state
# they touch on every packet as C fields; everything else stays in the instance __dict__.
cimport cython

from dnsguard.detect.judge cimport Judge
from dnsguard.features.measure cimport Measurements
from dnsguard.features.payload cimport NameAnalyzer, NameFeatures


cdef bint _COMPILED

@cython.locals(a=cython.uint, b=cython.uint, c=cython.uint, d=cython.uint)
cdef unsigned int _u32(const unsigned char* p, Py_ssize_t i, bint big) noexcept
cdef bint _either_port(const unsigned char* m, int a, int b) noexcept


cdef class Pipeline:
    cdef dict __dict__
    cdef public object ports, exempt_ports, counters, query_types, response_types
    cdef public object first_ts
    cdef public NameAnalyzer names
    cdef public Measurements measure
    cdef public Judge judge
    cdef public bint fast_path
    cdef public double last_ts

    cdef public bytes _port_map
    cdef public object _exempt_map
    cdef public object _psrc, _pdst
    cdef public int _psport, _pdport
    cdef public bint _ptcp

    cpdef str feed(self, double ts, int linktype, object data, Py_ssize_t wirelen)

    cdef str _feed_at(self, double ts, int linktype, bytes data, Py_ssize_t base, Py_ssize_t end,
                      Py_ssize_t wirelen)

    @cython.locals(n=Py_ssize_t, ts=double, lt=int, wirelen=Py_ssize_t, hdr=Py_ssize_t,
                   big=bint, unit=double, buf=bytes, pos=Py_ssize_t, stop=Py_ssize_t,
                   start=Py_ssize_t)
    cpdef Py_ssize_t feed_frames(self, object frames, object tick=*) except -1

    @cython.locals(n=Py_ssize_t, buf=cython.p_uchar, off=Py_ssize_t, total=Py_ssize_t,
                   ulen=Py_ssize_t, sport=int, dport=int, em=bytes,
                   start=Py_ssize_t)
    cdef object _fast(self, double ts, int linktype, bytes data, Py_ssize_t base,
                      Py_ssize_t end)

    @cython.locals(buf=cython.p_uchar, flags=int, an=Py_ssize_t, ns=Py_ssize_t,
                   ar=Py_ssize_t, q=Py_ssize_t, limit=Py_ssize_t, z=Py_ssize_t,
                   off=Py_ssize_t, ln=int, qtype=int, rcode=int, down=Py_ssize_t,
                   p=Py_ssize_t, i=Py_ssize_t, total=Py_ssize_t, owner_root=bint,
                   rdlen=Py_ssize_t, size=Py_ssize_t, nf=NameFeatures)
    cdef object _fast_dns(self, double ts, bytes data, Py_ssize_t start, Py_ssize_t stop,
                          bytes src, bytes dst)
