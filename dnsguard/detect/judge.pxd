# Cython declarations for judge.py (see setup.py): the observer callbacks measurement makes
# on every message (factor, on_query, on_due) as C calls.
cimport cython
from dnsguard.detect.allowlist cimport Allowlist
from dnsguard.detect.policy cimport Policy
from dnsguard.features.measure cimport Observer
from dnsguard.features.payload cimport NameFeatures
from dnsguard.features.window cimport KeyStats
from dnsguard.features.window cimport features as window_features


cdef tuple _GATE_FIELDS
cdef long long _gate_value(NameFeatures nf, int idx)
@cython.locals(idx=int, bar=double, strict=bint, v=cython.longlong)
cpdef bint _gate_open(NameFeatures nf, tuple gate) except -1


cdef class Judge(Observer):
    cdef dict __dict__
    cdef public Policy policy
    cdef public Allowlist allow
    cdef public object rules, m
    cdef public list extra_detectors
    cdef public tuple _need
    cdef public dict _msg_test
    cdef public tuple _msg_last
    cdef public double _msg_factor
    cdef public Py_ssize_t _need_for
    cdef public bint _allow_nets

    cpdef tuple evidence_need(self)
    cpdef double factor(self, NameFeatures nf, bytes client, bytes server) except? -2.0
    cpdef void on_query(self, double ts, NameFeatures nf, int qtype, double factor,
                        KeyStats st, bytes client, bytes server)
    cpdef bint message_hit(self, NameFeatures nf, int qtype, double factor) except -1
    @cython.locals(verdicts=dict, tests=tuple)
    cdef tuple _verdict(self, NameFeatures nf, int qtype, double factor)
    cpdef void on_due(self, str scope, object key, KeyStats st, double ts)
    cpdef void on_close(self, str scope, object key, KeyStats st)
    cpdef void on_long_due(self, int due, bytes client, bytes server, str rd, double factor,
                           double ts)
    @cython.locals(allow=Allowlist)
    cpdef object allowed(self, NameFeatures nf, bytes client, bytes server)
    # The evaluation of a due key as C calls (on every evaluation, suppressed keys too).
    cdef void _check(self, str scope, object key, KeyStats st, double ts)
    cdef str _base_domain(self, KeyStats st, str rd)
    cdef list _rule_hits(self, str scope, dict f, double factor)
    cdef void _evaluate(self, str scope, tuple ident, dict f, double factor, double ts,
                        object client, object server, object domain, KeyStats st,
                        object samples)
