# Cython declarations for horizon.py (see setup.py): per-key counters as C fields, and the
# per-query accounting typed. LongStats is kept out of the cyclic collector by its
# ``@cython.no_gc`` in horizon.py (the decorator has no effect in a .pxd).
cimport cython
from dnsguard.features.payload cimport NameFeatures

cdef Py_ssize_t MAX_CLIENTS  # a C constant: compared per new name of a domain


cdef class LongStats:
    cdef public double first, last, t_dec, q, new, enc, up, down, sub, ent, carrier
    cdef public double up_total, down_total
    cdef public long long q_total, new_total, evaluated_new
    cdef public Py_hash_t h1
    cdef public set names
    cdef public list clients, samples
    cdef public object suffix, ivals
    cdef public Py_ssize_t pos, n_ivals

    cpdef void restart(self, double ts)
    cpdef void count(self, double ts, bint carrier, bint new, double est, NameFeatures nf)
    @cython.locals(f=double)
    cpdef void decay(self, double ts, double tau)

    @cython.locals(s=set, hv=Py_hash_t)
    cpdef bint is_new(self, object h, Py_ssize_t cap) except -1


cdef class FirstQuery:
    cdef public double t, est, sub, ent
    cdef public bint enc


cpdef double worth(LongStats r, double now, double tau) except? -1.0

# Feature helpers (what the judge reads when a key is due) and per-query helpers as C calls.
@cython.locals(scale=double, y=double, m=double, d=double, _=int)
cpdef double _round(double x, int n) except? -1.0
@cython.locals(den=double)
cdef double _bowley(double q1, double q2, double q3) except? -2.0
@cython.locals(n=Py_ssize_t)
cdef tuple _quartiles(list xs)
@cython.locals(d=list, devs=list, s=list, sdevs=list, best=Py_ssize_t, run=Py_ssize_t,
               out=dict, ts_skew=double, ds_skew=double, lo=long, mid=long, hi=long, slo=long,
               smid=long, shi=long, x=long, prev=long, mode=long, count_score=double)
cpdef dict beacon_score(list intervals, list sizes, long long count, double span)
@cython.locals(i=Py_ssize_t, m=Py_ssize_t, n=Py_ssize_t, k=Py_ssize_t)
cdef tuple _common_suffix(tuple suf, tuple lower)
cdef bint _due(long long n) noexcept


cdef class Horizon:
    cdef public double tau, idle
    cdef public Py_ssize_t max_domains, max_pairs, name_cap, min_new, restarted
    cdef public dict domains, pairs, evicted, once, fresh, fresh_old
    cdef public Py_ssize_t fresh_cap, forgotten
    cdef public bint door

    @cython.locals(r=LongStats)
    cdef LongStats _get(self, dict table, object key, double ts, Py_ssize_t cap, str scope)

    @cython.locals(r=LongStats, p=LongStats, new=bint, carrier=bint, cl=list, due=int,
                   est=double, iv=double, i=Py_ssize_t, sm=list, once=dict, t1=object,
                   fq=FirstQuery, ring=Py_ssize_t,
                   held=tuple, fresh=dict, hk=object)  # hk: one int for the pop and the insert
    cpdef int observe_query(self, double ts, bytes client, NameFeatures nf, int qtype,
                            Py_ssize_t size, bint per_client, tuple key=*) except -1

    @cython.locals(new=bint, cl=list, sm=list)
    cdef bint _domain_query(self, LongStats r, double ts, bytes client, NameFeatures nf,
                            bint carrier) except -1
    @cython.locals(r=LongStats, table=dict, t1=double, qt1=int)
    cdef LongStats _admit(self, str rd, tuple held, double ts)

    @cython.locals(r=LongStats, p=LongStats, held=tuple)
    cpdef void observe_response(self, double ts, bytes client, str rd, Py_ssize_t down,
                                bint per_client, tuple key=*)

    @cython.locals(q=double, new=double)
    cdef dict _common(self, LongStats r, double now)
    @cython.locals(r=LongStats, f=dict)
    cpdef dict domain_features(self, str rd, object now=*)
    @cython.locals(p=LongStats, f=dict, n=Py_ssize_t)
    cpdef dict pair_features(self, tuple key, object now=*)
