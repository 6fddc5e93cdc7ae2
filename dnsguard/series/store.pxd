# Cython declarations for store.py (see setup.py): the per-packet adds typed.
cimport cython

cdef dict _QIDX  # qtype -> bucket: a typed dict's get, not a method looked up per query
cdef Py_ssize_t _NAMES_CAP, _CUR_CAP  # C copies of NAMES_CAP, CUR_CAP (compared per packet)


# counters, a set of ints, a dict of ints: never part of a cycle (no_gc: in store.py)
cdef class Entry:
    cdef public double q, up, down, nx, nw
    cdef public set names
    cdef double qt[16]  # per query-type bucket (NQ, checked at import): zeroed on allocation

    @cython.locals(names=set, qc=dict, n=Py_ssize_t)
    cpdef void query(self, Py_ssize_t size, object name_hash, Py_ssize_t qi, double w=*)


cdef class SeriesTable:
    cdef public object kind, data, qt, keys, free, born, score, cand
    cdef public Entry overflow
    cdef public dict slot_of, cur
    cdef public Py_ssize_t max_keys, capacity, other, promoted, demoted, last_step

    cpdef Entry entry(self, object key)

    @cython.locals(items=list, e=Entry, oq=double, on=double, oup=double, odown=double,
                   onx=double, oqt=list, i=Py_ssize_t, n=double, slots=list, vals=list,
                   qts=list, vol=dict, slot_of=dict, untracked=bint)
    cpdef close(self, Py_ssize_t step)

    @cython.locals(cand=dict, v=double, q=double)
    cpdef _rerank(self, dict vol, Py_ssize_t step)


cdef class SeriesStore:
    cdef public double step, _end, last_ts
    cdef public Py_ssize_t capacity, held, closed
    cdef public dict tables
    cdef public SeriesTable _c, _d
    cdef public object cur_step, _held, on_close

    cpdef void observe_query(self, double ts, object client, object regdomain,
                             object name_hash, Py_ssize_t size, int qtype, double w=*)
    cpdef void observe_response(self, double ts, object client, object regdomain,
                                Py_ssize_t size, int rcode, double w=*)

    @cython.locals(qi=Py_ssize_t, e=Entry)
    cpdef void _query(self, object client, object regdomain, object name_hash, Py_ssize_t size,
                      int qtype, double w=*)

    @cython.locals(nx=double, down=double, e=Entry)
    cpdef void _response(self, object client, object regdomain, Py_ssize_t size, int rcode,
                         double w=*)
