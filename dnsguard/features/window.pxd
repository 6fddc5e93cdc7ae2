# Cython declarations for window.py (see setup.py): per-key counters as C fields, and the
# per-packet accounting functions typed. No reference cycle can pass through a KeyStats
# (it holds counters, sets of bytes, strings): no_gc keeps the cyclic collector from walking
# the hundreds of thousands of them a busy sensor holds.
cimport cython
from dnsguard.features.payload cimport NameFeatures
from dnsguard.features.namehash cimport hash_bytes
from dnsguard.features.sketch cimport DistinctCounter

cdef dict _QINFO


cdef class KeyStats:  # no_gc: in window.py (a .pxd decorator is ignored)
    cdef public double start, last, sum_entropy, factor
    cdef public long long queries, responses, bytes_up, bytes_down, sum_sub_len, max_label
    cdef public long long encoded, non_ldh, rare, carrier, txt, nxdomain, packets
    cdef public long long evaluated_at, uuid, digest, resource, service, addr, label_names, label_fresh
    cdef public double new_data
    cdef public Py_hash_t last_hash
    cdef public DistinctCounter names
    cdef public bytearray label_map
    cdef public dict qtypes
    cdef public set clients
    cdef public list samples
    cdef public object servers, domains, enc_domains, unk_domains, suffix
    cdef public object last_client, last_server

    cpdef void reuse(self, double ts)


cdef class WindowTable:
    cdef public object scope, keys, lookup, touch
    cdef public double window
    cdef public Py_ssize_t max_keys, exact_cap, evicted, hold_cap, forgotten
    cdef public bint _multi_client
    cdef public dict held, held_old

    cpdef void hold(self, object key, tuple packets)
    cpdef tuple take(self, object key)
    @cython.locals(h=dict, p=tuple)
    cpdef tuple take_or_hold(self, object key, tuple packets)

    @cython.locals(st=KeyStats, old=KeyStats)
    cpdef tuple get(self, object key, double ts)


@cython.locals(s=set, names=DistinctCounter, qt=dict, clients=set, samples=list, lower=tuple,
               suf=tuple, info=tuple, sub_len=cython.longlong, i=Py_ssize_t, m=Py_ssize_t, rare=int,
               carrier=int, txt=int, h=Py_hash_t, n0=Py_ssize_t, shape=int, new=bint,
               nsub=Py_ssize_t, lm=bytearray, fresh=int, b=Py_ssize_t, bit=int)
cpdef void note_query(KeyStats st, NameFeatures nf, int qtype, object client, object server,
                      bint track_suffix=*)
cpdef void note_client_domain(KeyStats st, NameFeatures nf)
cpdef void note_response(KeyStats st, long long answer_bytes, int rcode)

@cython.locals(q=cython.longlong, qd=cython.longlong, resp=cython.longlong, dur=double,
               distinct=Py_ssize_t, nd=Py_ssize_t, ne=Py_ssize_t, nu=Py_ssize_t, f=dict,
               ln=cython.longlong)
cpdef dict features(KeyStats st, str scope)
