# Cython declarations for namehash.py (see setup.py): the key as two C words and SipHash-1-3
# on C unsigned 64-bit integers. sip13 is cpdef: compiled modules call it in C on their own
# buffers (payload's name, window's labels); Python callers pass bytes.
cimport cython

cdef unsigned long long _K0, _K1, _IV0, _IV1, _IV2, _IV3
cdef extern from *:  # all ones: C arithmetic on these words wraps, so masks are no-ops
    """
    #define DNSGUARD_M64 0xFFFFFFFFFFFFFFFFULL
    """
    const unsigned long long _M64 "DNSGUARD_M64"

cdef extern from *:  # one word, little-endian: one load (gcc, clang) where an octet loop was 24
    """
    #include <string.h>
    static inline unsigned long long dnsguard_le64(const unsigned char *p) {
        unsigned long long m;
        memcpy(&m, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        m = __builtin_bswap64(m);
    #endif
        return m;
    }
    """
    unsigned long long _le64 "dnsguard_le64"(const unsigned char* p) noexcept nogil


@cython.locals(v0=cython.ulonglong, v1=cython.ulonglong, v2=cython.ulonglong,
               v3=cython.ulonglong, m=cython.ulonglong, t=cython.ulonglong,
               h=cython.ulonglong, end=Py_ssize_t, i=Py_ssize_t, k=Py_ssize_t, last=bint)
cpdef long long sip13(const unsigned char* p, Py_ssize_t n) noexcept

cpdef long long hash_bytes(bytes b) except? -1

@cython.locals(b=bytes)
cpdef long long hash_str(str s) except? -1
