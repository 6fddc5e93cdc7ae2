# Cython declarations for measure.py (see setup.py): the per-message measurement typed, and
# the observer interface as cpdef methods so the judge's overrides are C calls.
cimport cython

from dnsguard.features.horizon cimport Horizon
from dnsguard.features.payload cimport NameFeatures
from dnsguard.features.sketch cimport DistinctCounter
# The window's per-message accounting as C calls (a cimported function; the .py imports it by
# name, which the interpreted module uses).
from dnsguard.features.window cimport (KeyStats, WindowTable, note_client_domain, note_query,
                                       note_response)
from dnsguard.series.store cimport SeriesStore

cdef Py_ssize_t _PAIR_MEMORY  # PAIR_MEMORY as a C integer


cdef class Observer:
    cdef public bint message_rules

    cpdef tuple evidence_need(self)
    cpdef double factor(self, NameFeatures nf, bytes client, bytes server) except? -2.0
    cpdef void on_query(self, double ts, NameFeatures nf, int qtype, double factor,
                        KeyStats st, bytes client, bytes server)
    cpdef bint message_hit(self, NameFeatures nf, int qtype, double factor) except -1
    cpdef void on_due(self, str scope, object key, KeyStats st, double ts)
    cpdef void on_close(self, str scope, object key, KeyStats st)
    cpdef void on_long_due(self, int due, bytes client, bytes server, str rd, double factor,
                           double ts)


cdef class Measurements:
    cdef dict __dict__
    cdef public object ports, tables, on_query
    cdef public DistinctCounter regdomains
    cdef public dict pair_domain, client_suspect, _suspect_stale
    cdef public list _pair_ring, _suspect_q
    cdef public Py_ssize_t _pair_pos, _suspect_head
    cdef public object series, _resolvers, _home, _client_ok
    cdef public tuple _tables3
    cdef public bint _vantage_filter
    cdef public SeriesStore _store
    cdef public Observer judge
    cdef public Horizon horizon

    @cython.locals(factor=double, st=KeyStats, t_dom=WindowTable, t_cd=WindowTable,
                   t_cl=WindowTable, need_dom=cython.longlong, need_cd=cython.longlong,
                   need_cl=cython.longlong, j=Observer, lh=Horizon, d=int,
                   per_client=bint, key=tuple, first=tuple, pd=dict, n=Py_ssize_t,
                   i=Py_ssize_t, pair=tuple, ring=list)
    cpdef bint query(self, double ts, NameFeatures nf, int qtype, Py_ssize_t size,
                     bytes client, bytes server) except -1

    @cython.locals(factor=double, st=KeyStats, t_dom=WindowTable, t_cd=WindowTable,
                   t_cl=WindowTable, need=tuple, j=Observer, per_client=bint, key=tuple,
                   rec=tuple)
    cpdef void response(self, double ts, NameFeatures nf, int rcode, Py_ssize_t down,
                        Py_ssize_t size, bytes client, bytes server)

    @cython.locals(cs=dict, q=list, n=Py_ssize_t, stale=dict, i=Py_ssize_t, k=Py_ssize_t)
    cdef void _note_suspect(self, bytes client, str rd)

    @cython.locals(st=KeyStats, held=tuple, p=tuple)
    cdef KeyStats _window(self, WindowTable table, object key, double ts, double factor,
                          bint hold=*, int kind=*, tuple rec=*, tuple first=*)
    @cython.locals(nf=NameFeatures, a=int, b=cython.longlong)
    cdef void _replay(self, KeyStats st, tuple p, int kind)

    @cython.locals(n=cython.longlong)
    cdef void _due(self, WindowTable table, object key, KeyStats st, long long need, double ts)
