# Cython declarations for pipeline.py (see setup.py): the per-packet methods typed, the state
# they touch on every packet as C fields; everything else stays in the instance __dict__.
cimport cython

from dnsguard.capture.dnstapwire cimport DnstapScanner
from dnsguard.decode.fastpath cimport FastScanner
from dnsguard.detect.judge cimport Judge
from dnsguard.features.measure cimport Measurements
from dnsguard.features.payload cimport NameAnalyzer, NameFeatures


@cython.locals(a=cython.uint, b=cython.uint, c=cython.uint, d=cython.uint)
cdef unsigned int _u32(const unsigned char* p, Py_ssize_t i, bint big) noexcept


cdef class Pipeline:
    cdef dict __dict__
    cdef public object ports, exempt_ports, _counters, _query_types, _response_types
    cdef public long long _fast_queries, _fast_responses
    cdef long long _fast_qtypes[256]
    cdef long long _fast_rtypes[256]
    cdef public object first_ts
    cdef public NameAnalyzer names
    cdef public Measurements measure
    cdef public Judge judge
    cdef public bint fast_path
    cdef public double last_ts, _due

    cdef public FastScanner scan
    cdef public object _psrc, _pdst
    cdef public int _psport, _pdport
    cdef public bint _ptcp

    cpdef str feed(self, double ts, int linktype, object data, Py_ssize_t wirelen)

    @cython.locals(sc=FastScanner)
    cdef str _feed_at(self, double ts, int linktype, bytes data, Py_ssize_t base, Py_ssize_t end,
                      Py_ssize_t wirelen)

    @cython.locals(n=Py_ssize_t, ts=double, lt=int, wirelen=Py_ssize_t, hdr=Py_ssize_t,
                   big=bint, unit=double, buf=bytes, pos=Py_ssize_t, stop=Py_ssize_t,
                   start=Py_ssize_t, hi=cython.ulonglong, tsoff=double, item=tuple)
    cpdef Py_ssize_t feed_frames(self, object frames, object tick=*) except -1

    @cython.locals(n=Py_ssize_t, buf=bytes, pos=Py_ssize_t, stop=Py_ssize_t, start=Py_ssize_t)
    cpdef Py_ssize_t feed_dnstap(self, object runs, DnstapScanner sc) except -1

    @cython.locals(sc=FastScanner, skip=bint)
    cdef str _feed_wire(self, double ts, bytes src, bytes dst, int sport, int dport, bytes data,
                        Py_ssize_t start, Py_ssize_t stop, bint tcp)

    @cython.locals(sc=FastScanner, buf=cython.p_uchar, q=Py_ssize_t, key=bytes,
                   names=NameAnalyzer, nf=NameFeatures, qt=int)
    cdef str _fast_message(self, double ts, bytes data)
