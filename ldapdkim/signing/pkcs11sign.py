"""C_SignInit and C_Sign of a PKCS #11 module called through ctypes, outside the interpreter lock.

PyKCS11 holds the interpreter lock through each call into the module, so
while a token signs no other thread of the process runs Python: under load
the milter's threads queue behind the token.  :class:`DirectSigner` reaches
the same module (the library PyKCS11 loaded, found again with ``dlopen``)
through its ``C_GetFunctionList`` and calls ``C_SignInit`` and ``C_Sign``
with ctypes, which lets go of the interpreter lock for each foreign call,
with PyKCS11's own session and key object handles.  PyKCS11 still does all
else (slots, sessions, login, finding and making keys).

Threads may then be in the module at once, which PKCS #11 allows only when
the module was initialised for it (v2.40 §5.4, §6.7.6): PyKCS11 passes no
C_INITIALIZE_ARGS, and SoftHSM2, for one, then uses no locks of its own.
:meth:`DirectSigner.initialize` therefore initialises the module with
``CKF_OS_LOCKING_OK``; a module that answers ``CKR_CANT_LOCK`` is
initialised as PyKCS11 does and signs through PyKCS11 (:mod:`ldapdkim.signing.pkcs11lib`
decides, and logs which way a process signs).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

CK_ULONG = ctypes.c_ulong
CK_RV = CK_ULONG

CKR_OK = 0
CKR_CANT_LOCK = 0x0A
CKR_BUFFER_TOO_SMALL = 0x150
CKF_OS_LOCKING_OK = 0x02

SIGNATURE_ROOM = 512
"""Bytes first offered for a signature (RSA up to 4096 bits; a larger key asks again)."""


class _Mechanism(ctypes.Structure):
    _fields_ = [
        ("mechanism", CK_ULONG),
        ("pParameter", ctypes.c_void_p),
        ("ulParameterLen", CK_ULONG),
    ]


class _InitializeArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", CK_ULONG),
        ("pReserved", ctypes.c_void_p),
    ]


_Initialize = ctypes.CFUNCTYPE(CK_RV, ctypes.POINTER(_InitializeArgs))
_Finalize = ctypes.CFUNCTYPE(CK_RV, ctypes.c_void_p)
_SignInit = ctypes.CFUNCTYPE(CK_RV, CK_ULONG, ctypes.POINTER(_Mechanism), CK_ULONG)
_Sign = ctypes.CFUNCTYPE(
    CK_RV, CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_char_p, ctypes.POINTER(CK_ULONG)
)

# CK_FUNCTION_LIST (PKCS #11 v2.40 §4.6) up to C_Sign; only a pointer to it is used.
_BEFORE_SIGN_INIT = (
    "C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo C_GetTokenInfo "
    "C_GetMechanismList C_GetMechanismInfo C_InitToken C_InitPIN C_SetPIN C_OpenSession "
    "C_CloseSession C_CloseAllSessions C_GetSessionInfo C_GetOperationState "
    "C_SetOperationState C_Login C_Logout C_CreateObject C_CopyObject C_DestroyObject "
    "C_GetObjectSize C_GetAttributeValue C_SetAttributeValue C_FindObjectsInit "
    "C_FindObjects C_FindObjectsFinal C_EncryptInit C_Encrypt C_EncryptUpdate "
    "C_EncryptFinal C_DecryptInit C_Decrypt C_DecryptUpdate C_DecryptFinal C_DigestInit "
    "C_Digest C_DigestUpdate C_DigestKey C_DigestFinal"
).split()


class _FunctionList(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_ubyte),
        ("minor", ctypes.c_ubyte),
        ("C_Initialize", _Initialize),
        ("C_Finalize", _Finalize),
        *((name, ctypes.c_void_p) for name in _BEFORE_SIGN_INIT),
        ("C_SignInit", _SignInit),
        ("C_Sign", _Sign),
    ]


class DirectSigner:
    """``C_Initialize``, ``C_Finalize``, ``C_SignInit`` and ``C_Sign`` of one loaded module."""

    def __init__(self, path: Path) -> None:
        """Find the module at ``path`` (already loaded by PyKCS11) and its functions.

        Raises:
            OSError: it does not load, has no ``C_GetFunctionList``, or gives no usable list.
        """
        self.path = path
        library = ctypes.CDLL(str(path))  # the same loaded object as PyKCS11's
        try:
            get_list = library.C_GetFunctionList
        except AttributeError:
            raise OSError(f"{path} has no C_GetFunctionList") from None
        get_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionList))]
        get_list.restype = CK_RV
        functions = ctypes.POINTER(_FunctionList)()
        rv = get_list(ctypes.byref(functions))
        if rv != CKR_OK or not functions:
            raise OSError(f"C_GetFunctionList of {path} answered {rv:#x}")
        table = functions.contents
        if table.major < 2 or not all(
            (table.C_Initialize, table.C_Finalize, table.C_SignInit, table.C_Sign)
        ):
            raise OSError(f"{path} gives no C_Initialize, C_Finalize, C_SignInit or C_Sign")
        self._library = library  # keeps the module loaded while the pointers are used
        self._initialize = table.C_Initialize
        self._finalize = table.C_Finalize
        self._sign_init = table.C_SignInit
        self._sign = table.C_Sign
        self._mechanisms: dict[int, _Mechanism] = {}

    def initialize(self) -> int:
        """C_Initialize for threads that call the module at once (``CKF_OS_LOCKING_OK``);
        its CK_RV."""
        args = _InitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return int(self._initialize(ctypes.byref(args)))

    def finalize(self) -> int:
        """C_Finalize; its CK_RV."""
        return int(self._finalize(None))

    def sign(self, session: int, key: int, mechanism: int, data: bytes) -> tuple[int, bytes]:
        """The CK_RV of C_SignInit and C_Sign with the key object ``key`` in ``session``,
        a mechanism that takes no parameter (CKM_RSA_PKCS, CKM_EDDSA), over ``data``; and
        the signature if that is CKR_OK."""
        params = self._mechanisms.get(mechanism)
        if params is None:
            params = self._mechanisms.setdefault(mechanism, _Mechanism(mechanism, None, 0))
        rv = self._sign_init(session, params, key)
        if rv != CKR_OK:
            return int(rv), b""
        room = ctypes.create_string_buffer(SIGNATURE_ROOM)
        size = CK_ULONG(SIGNATURE_ROOM)
        rv = self._sign(session, data, len(data), room, size)
        if rv == CKR_BUFFER_TOO_SMALL:  # the operation goes on (v2.40 §5.2)
            room = ctypes.create_string_buffer(size.value)
            rv = self._sign(session, data, len(data), room, size)
        return int(rv), room.raw[: size.value] if rv == CKR_OK else b""
