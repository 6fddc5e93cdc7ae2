# Cython declarations for payload.py (see setup.py): NameFeatures' fields as C fields, read
# per packet by features/window.py and the pipeline.
cimport cython
from dnsguard.domain cimport RegisteredDomains
from dnsguard.features.namehash cimport hash_str, sip13

cdef list _LOG2
cdef Py_ssize_t _MIN_LABEL_C
cdef int _TLD_KNOWN_C, _TLD_WILD_C
cdef double _LOG2C[256]  # _LOG2 as C doubles (compiled only: _fill_log2)
# Octet counters of _compute_key, _looks_encoded_plain and _entropy_c (one each: none calls
# itself), zero between calls: each resets the octets it counted.
cdef long _CNT_K[256]
cdef long _CNT_L[256]
cdef long _CNT_E[256]
@cython.locals(i=int)
cdef void _fill_log2()
cdef bint _COMPILED

cdef double _entropy_c(bytes data) except? -1.0
@cython.locals(i=Py_ssize_t, seen=Py_ssize_t, b=cython.uchar, counts=cython.p_long, e=double)
cdef double _entropy_at(const unsigned char* p, Py_ssize_t start, Py_ssize_t n) except? -1.0
@cython.locals(i=Py_ssize_t, c=cython.long, s=cython.double, lg=cython.double)
cdef double _entropy_sum(long* counts, unsigned char* order, Py_ssize_t seen,
                         Py_ssize_t n) except? -1.0

@cython.locals(i=Py_ssize_t, j=int, bits=cython.uchar, table=cython.p_uchar)
cdef tuple _class_counts_c(bytes data)

cdef double _h(bytes data) except? -1.0

@cython.locals(x=bytes)
cpdef bint _has_service(tuple sub) except -1
@cython.locals(n=Py_ssize_t, low=bytes)
cpdef int _id_shape(bytes longest, tuple sub) except -1
@cython.locals(long_labels=Py_ssize_t, x=bytes)
cpdef bint _single_long(tuple sub) except -1

cdef Py_ssize_t _ID_FIELD_MAX, _RESOURCE_LONG_FIELD, _RESOURCE_RANDOM_MAX
@cython.locals(x=bytes)
cpdef int _resource_shape(bytes longest, tuple sub) except -1
@cython.locals(x=bytes)
cpdef bint _words(bytes label) except -1
@cython.locals(fields=list, x=bytes, n=Py_ssize_t, ids=Py_ssize_t, long_fields=Py_ssize_t,
               rand=Py_ssize_t)
cpdef bint _resource_id(bytes low) except -1
@cython.locals(low=bytes)
cpdef bint _looks_encoded(bytes label, Py_ssize_t total, Py_ssize_t non_ldh) except -1

# strings, numbers, a verdict dict of tuples: never part of a cycle (no_gc: in payload.py)
cdef class NameFeatures:
    cdef public object name, regdomain, lower, verdicts, allow, name_hash, reg_hash
    cdef public bint tld_known, encoded, reg_encoded, counted, service, addr
    cdef public int id_shape
    cdef public long long qname_len, label_count, max_label, sub_len, sub_labels, nonprint
    cdef public long long non_ldh, reg_label_len
    cdef public double sub_entropy, digit_share, upper_share, b32_fit, b64_fit, b64url_fit
    cdef public double hex_fit, reg_label_entropy, info_bytes

    @cython.locals(low=tuple)
    cpdef tuple lowered(self)

cdef class NameAnalyzer:
    cdef public object domains
    cdef public dict _cache
    cdef public dict _old
    cdef public Py_ssize_t _cache_size, computed, turnovers

    # C calls from the pipeline's fast path (a Python subclass may still override them).
    cpdef NameFeatures analyze_wire(self, bytes key, bytes data, Py_ssize_t off)
    @cython.locals(f=NameFeatures, cache=dict)
    cpdef NameFeatures _miss(self, bytes key, tuple labels, bytes data, Py_ssize_t off)

    @cython.locals(f=NameFeatures, whole=bytes, low=bytes, lower=tuple, name=str, tld=str,
                   nreg=Py_ssize_t, nl=Py_ssize_t, sub=tuple, nsub=Py_ssize_t, joined=bytes,
                   n=Py_ssize_t, dig=Py_ssize_t, upp=Py_ssize_t, prn=Py_ssize_t,
                   ldh=Py_ssize_t, hx=Py_ssize_t, b32=Py_ssize_t, b64=Py_ssize_t,
                   b64u=Py_ssize_t, non_ldh=Py_ssize_t, longest=bytes, x=bytes,
                   reg_label=bytes, texts=list, low_sub=bytes, svc=bint, shape=int)
    cpdef NameFeatures _compute(self, tuple labels)


@cython.locals(n=Py_ssize_t, p=cython.p_uchar, nl=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t,
               k=Py_ssize_t, ln=Py_ssize_t, m=Py_ssize_t, rl=Py_ssize_t, c=cython.uchar,
               st=Py_ssize_t, cbuf=cython.p_char, name=str, tld=str, tail=str,
               f=NameFeatures, labels=tuple, nsub=Py_ssize_t, sn=Py_ssize_t,
               longest=Py_ssize_t, under=bint, hy=Py_ssize_t, us=Py_ssize_t,
               seen=Py_ssize_t, table=cython.p_uchar, bits=cython.uchar, b=int,
               ml=Py_ssize_t, ent=double, dig=Py_ssize_t, non_ldh=Py_ssize_t,
               svc=bint, shape=int, hexend=bint, looks=bint,
               tl=Py_ssize_t, known=object, cnt=cython.long, counts=cython.p_long,
               plain=cython.p_uchar, lc=cython.uchar, h=Py_ssize_t, flag=int, sb=bytes,
               q=cython.p_uchar, slots=list)
cpdef NameFeatures _compute_key(RegisteredDomains domains, bytes key)
@cython.locals(k=Py_ssize_t)
cdef tuple _labels_at(unsigned char* p, int* starts, int* lens, Py_ssize_t nl)
cdef void _no_subdomain(NameFeatures f)

@cython.locals(i=Py_ssize_t, j=Py_ssize_t, seen=Py_ssize_t, c=cython.uchar, hexonly=bint,
               alpha=bint, digits=bint, isdig=bint, isalpha=bint, e=double,
               counts=cython.p_long)
cdef bint _looks_encoded_plain(const unsigned char* p, Py_ssize_t start,
                               Py_ssize_t ln) except -1
