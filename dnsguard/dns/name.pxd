# Cython declarations for name.py (see setup.py): presentation form octet by octet in C.
cimport cython


@cython.locals(out=bytearray, kind=cython.p_uchar, c=cython.uchar, k=cython.uchar)
cpdef str label_text(bytes label)
