/* app.service.search._spacing: `imchat_spaced` as a C function of SQLite, for the search index.
 *
 * What it computes is app/service/search/text.py's `spaced()`, byte for byte: every character
 * replaced by its entry of the table that text.py builds from Python's own Unicode data (NFKC and
 * casefold, CJK characters of the BMP between spaces), then every CJK character beyond the BMP
 * between spaces. The table is handed over once (`load_table`); this module has no Unicode data
 * of its own, so the two can only differ if the table does.
 *
 * Why C: the indexer runs `INSERT INTO im_search_fts ... SELECT imchat_spaced(content) ...` over
 * thousands of messages a batch. Registered from Python, each row takes the GIL, makes a `str` of
 * the text, translates it through a dict and makes UTF-8 again; registered here, SQLite calls
 * this function directly, without the GIL (Python's sqlite3 releases it while a statement runs).
 *
 * `install(connection)` registers the function on a `sqlite3.Connection`. Python's sqlite3 module
 * offers no way to register a C function, so the database handle is read from the connection
 * object: `sqlite3 *db` is the first field after the object header in CPython 3.11 to 3.13
 * (Modules/_sqlite/connection.h); built for a later Python, `install` refuses (the indexer then
 * uses the Python function) until that is checked again. Python's `_sqlite3` and this module both link the system's
 * libsqlite3, so the handle and the functions called here belong to the same library; `install`
 * refuses a different library version, and sqlite_index.py checks the result against
 * `spaced()` through SQL before it relies on it.
 *
 * A connection gets the function once: SQLite refuses to replace a function while the connection
 * is inside a transaction ("database is locked"), and the indexer asks inside one. The handles
 * that have it are remembered until SQLite drops the function (at close: its destructor), so a
 * handle reused by a new connection is registered again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
} ConnectionHead;

/* The table, as spaced() applies it: for each code point of the BMP what becomes of it (KEPT:
 * itself, SPACED: itself between spaces, else the length of its replacement in `pool`, at
 * bmp_start); beyond the BMP, sorted code points and their replacements. Replacements are
 * stored as spaced() finally writes them, CJK beyond the BMP already between spaces. ASCII (every
 * byte below 0x80 is in the table as one byte) has its own map. */
#define KEPT 0xFF
#define SPACED 0xFE
#define LONGEST 0xFD
static uint8_t bmp_kind[0x10000];
static uint32_t bmp_start[0x10000];
static unsigned char ascii_map[0x80];
static uint32_t *astral_code;
static uint32_t *astral_start;
static uint8_t *astral_length;
static Py_ssize_t astral_count;
static unsigned char *pool;
static int table_loaded;

/* The CJK ranges beyond the BMP that spaced() puts between spaces after the table (text.py's
 * CJK_RANGES from 0x20000). */
static int is_astral_cjk(uint32_t code) { return code >= 0x20000 && code <= 0x3134F; }

/* The length of the UTF-8 sequence starting at `text` (at most `left` bytes) and its code
 * point; a byte that starts no valid sequence is taken alone, as itself (never produced by
 * Python, which stores only valid UTF-8: kept, not dropped, so nothing is lost). */
static inline int decode(const unsigned char *text, sqlite3_uint64 left, uint32_t *code) {
    unsigned char first = text[0];
    int length;
    uint32_t value;
    if (first < 0x80) { *code = first; return 1; }
    if ((first & 0xE0) == 0xC0) { length = 2; value = first & 0x1F; }
    else if ((first & 0xF0) == 0xE0) { length = 3; value = first & 0x0F; }
    else if ((first & 0xF8) == 0xF0) { length = 4; value = first & 0x07; }
    else { *code = 0xFFFFFFFF; return 1; }
    if ((sqlite3_uint64)length > left) { *code = 0xFFFFFFFF; return 1; }
    for (int i = 1; i < length; i++) {
        if ((text[i] & 0xC0) != 0x80) { *code = 0xFFFFFFFF; return 1; }
        value = (value << 6) | (text[i] & 0x3F);
    }
    *code = value;
    return length;
}

static Py_ssize_t find_astral(uint32_t code) {
    Py_ssize_t low = 0, high = astral_count - 1;
    while (low <= high) {
        Py_ssize_t middle = (low + high) / 2;
        if (astral_code[middle] == code) return middle;
        if (astral_code[middle] < code) low = middle + 1;
        else high = middle - 1;
    }
    return -1;
}

/* Room for any one character's output: a replacement (at most LONGEST bytes) or a character of
 * at most 4 bytes between spaces. */
#define ROOM (LONGEST + 8)

static void imchat_spaced(sqlite3_context *context, int argc, sqlite3_value **argv) {
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(context);
        return;
    }
    const unsigned char *text = sqlite3_value_text(argv[0]);
    sqlite3_uint64 length = (sqlite3_uint64)sqlite3_value_bytes(argv[0]);
    if (text == NULL) {
        sqlite3_result_error_nomem(context);
        return;
    }
    sqlite3_uint64 capacity = length + length / 2 + ROOM;
    unsigned char *out = sqlite3_malloc64(capacity);
    sqlite3_uint64 used = 0, at = 0;
    if (out == NULL) {
        sqlite3_result_error_nomem(context);
        return;
    }
    while (at < length) {
        if (capacity - used < ROOM) {
            capacity = capacity * 2;
            unsigned char *grown = sqlite3_realloc64(out, capacity);
            if (grown == NULL) {
                sqlite3_free(out);
                sqlite3_result_error_nomem(context);
                return;
            }
            out = grown;
        }
        unsigned char byte = text[at];
        if (byte < 0x80) {
            out[used++] = ascii_map[byte];
            at++;
            continue;
        }
        uint32_t code;
        int size = decode(text + at, length - at, &code);
        const unsigned char *from = text + at;
        unsigned int kind = KEPT;
        if (code < 0x10000) {
            kind = bmp_kind[code];
            if (kind < SPACED) from = pool + bmp_start[code];
        } else if (code != 0xFFFFFFFF) {
            Py_ssize_t index = find_astral(code);
            if (index >= 0) {
                kind = astral_length[index];
                from = pool + astral_start[index];
            } else if (is_astral_cjk(code)) {
                kind = SPACED;
            }
        }
        if (kind == KEPT) {
            memcpy(out + used, from, size);
            used += size;
        } else if (kind == SPACED) {
            out[used] = ' ';
            memcpy(out + used + 1, from, size);
            out[used + 1 + size] = ' ';
            used += size + 2;
        } else {
            memcpy(out + used, from, kind);
            used += kind;
        }
        at += size;
    }
    sqlite3_result_text64(context, (const char *)out, used, sqlite3_free, SQLITE_UTF8);
}

/* `value` (valid UTF-8 of a table entry) as spaced() finally writes it: CJK beyond the BMP
 * between spaces. Appended to pool at *used (room for it made by the caller); its length. */
static Py_ssize_t store_final(const unsigned char *value, Py_ssize_t size, Py_ssize_t *used) {
    Py_ssize_t start = *used, at = 0;
    while (at < size) {
        uint32_t code;
        int step = decode(value + at, size - at, &code);
        if (step == 4 && is_astral_cjk(code)) pool[(*used)++] = ' ';
        memcpy(pool + *used, value + at, step);
        *used += step;
        if (step == 4 && is_astral_cjk(code)) pool[(*used)++] = ' ';
        at += step;
    }
    return *used - start;
}

static PyObject *load_table(PyObject *module, PyObject *table) {
    (void)module;
    if (!PyDict_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "the table is a dict of code point -> str");
        return NULL;
    }
    if (table_loaded) Py_RETURN_NONE;  /* one table a process: text.py's, built once */
    Py_ssize_t astral = 0, total = 0, position = 0;
    PyObject *key, *value;
    while (PyDict_Next(table, &position, &key, &value)) {
        long code = PyLong_AsLong(key);
        Py_ssize_t size;
        if (code == -1 && PyErr_Occurred()) return NULL;
        /* A replacement at most a third of LONGEST: spacing CJK beyond the BMP adds at most
         * half its bytes again. */
        if (code < 0 || code > 0x10FFFF || !PyUnicode_Check(value)
            || PyUnicode_AsUTF8AndSize(value, &size) == NULL || size > LONGEST / 3) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a table entry is not code point -> short str");
            return NULL;
        }
        total += size + size / 2 + 2;
        if (code >= 0x10000) astral++;
    }
    pool = PyMem_RawMalloc(total + 1);
    astral_code = PyMem_RawMalloc(sizeof(uint32_t) * (astral + 1));
    astral_start = PyMem_RawMalloc(sizeof(uint32_t) * (astral + 1));
    astral_length = PyMem_RawMalloc(astral + 1);
    if (!pool || !astral_code || !astral_start || !astral_length) return PyErr_NoMemory();
    memset(bmp_kind, KEPT, sizeof bmp_kind);
    Py_ssize_t used = 0;
    astral_count = 0;
    position = 0;
    while (PyDict_Next(table, &position, &key, &value)) {
        long code = PyLong_AsLong(key);
        Py_ssize_t size;
        const unsigned char *bytes = (const unsigned char *)PyUnicode_AsUTF8AndSize(value, &size);
        Py_ssize_t start = used, final = store_final(bytes, size, &used);
        if (code < 0x10000) {
            int own_size = code < 0x80 ? 1 : code < 0x800 ? 2 : 3;
            if (final == own_size + 2 && pool[start] == ' ' && pool[start + final - 1] == ' '
                && PyUnicode_GetLength(value) == 3
                && PyUnicode_ReadChar(value, 1) == (Py_UCS4)code) {
                bmp_kind[code] = SPACED;
            } else if (PyUnicode_GetLength(value) == 1
                       && PyUnicode_ReadChar(value, 0) == (Py_UCS4)code) {
                bmp_kind[code] = KEPT;
            } else {
                bmp_kind[code] = (uint8_t)final;
                bmp_start[code] = (uint32_t)start;
            }
        } else {
            /* insertion into the sorted arrays: few entries beyond the BMP */
            Py_ssize_t at = astral_count;
            while (at > 0 && astral_code[at - 1] > (uint32_t)code) {
                astral_code[at] = astral_code[at - 1];
                astral_start[at] = astral_start[at - 1];
                astral_length[at] = astral_length[at - 1];
                at--;
            }
            astral_code[at] = (uint32_t)code;
            astral_start[at] = (uint32_t)start;
            astral_length[at] = (uint8_t)final;
            astral_count++;
        }
    }
    /* ASCII: one byte each, from the table (a character not in it stays as it is). */
    for (int code = 0; code < 0x80; code++) {
        unsigned int kind = bmp_kind[code];
        if (kind == KEPT) ascii_map[code] = (unsigned char)code;
        else if (kind == 1) ascii_map[code] = pool[bmp_start[code]];
        else {
            PyErr_SetString(PyExc_ValueError, "an ASCII character's entry is not one byte");
            return NULL;
        }
    }
    table_loaded = 1;
    Py_RETURN_NONE;
}

/* The database handles that have the function now; a handful per process (the indexer's
 * connection, the message writer's, a scratch one). The destructor runs at sqlite3_close, which
 * Python calls without the GIL: hence the mutex. */
static pthread_mutex_t registered_lock = PTHREAD_MUTEX_INITIALIZER;
static sqlite3 **registered;
static size_t registered_count, registered_capacity;

static int is_registered(sqlite3 *db) {
    for (size_t i = 0; i < registered_count; i++)
        if (registered[i] == db) return 1;
    return 0;
}

static void forget_handle(void *handle) {
    pthread_mutex_lock(&registered_lock);
    for (size_t i = 0; i < registered_count; i++) {
        if (registered[i] == handle) {
            registered[i] = registered[--registered_count];
            break;
        }
    }
    pthread_mutex_unlock(&registered_lock);
}

static int remember_handle(sqlite3 *db) {
    if (registered_count == registered_capacity) {
        size_t capacity = registered_capacity * 2 + 8;
        sqlite3 **grown = realloc(registered, capacity * sizeof *grown);
        if (grown == NULL) return 0;
        registered = grown;
        registered_capacity = capacity;
    }
    registered[registered_count++] = db;
    return 1;
}

static PyObject *install(PyObject *module, PyObject *connection) {
    (void)module;
    PyObject *sqlite3_module = PyImport_ImportModule("sqlite3");
    if (sqlite3_module == NULL) return NULL;
    PyObject *connection_type = PyObject_GetAttrString(sqlite3_module, "Connection");
    PyObject *version = PyObject_GetAttrString(sqlite3_module, "sqlite_version");
    Py_DECREF(sqlite3_module);
    if (connection_type == NULL || version == NULL) {
        Py_XDECREF(connection_type);
        Py_XDECREF(version);
        return NULL;
    }
    int is_connection = PyObject_IsInstance(connection, connection_type);
    Py_DECREF(connection_type);
    const char *python_version = PyUnicode_AsUTF8(version);
    int same_library = python_version != NULL && strcmp(python_version, sqlite3_libversion()) == 0;
    Py_DECREF(version);
    if (is_connection < 0) return NULL;
    if (!is_connection) {
        PyErr_SetString(PyExc_TypeError, "install() takes a sqlite3.Connection");
        return NULL;
    }
    if (!same_library) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Python's sqlite3 runs another SQLite library than this module");
        return NULL;
    }
    if (!table_loaded) {
        PyErr_SetString(PyExc_RuntimeError, "load_table() first");
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030E0000
    PyErr_SetString(PyExc_RuntimeError,
                    "the layout of sqlite3.Connection is checked for Python 3.11-3.13 only");
    return NULL;
#endif
    sqlite3 *db = ((ConnectionHead *)connection)->db;
    if (db == NULL) {
        PyErr_SetString(PyExc_ValueError, "the connection is closed");
        return NULL;
    }
    pthread_mutex_lock(&registered_lock);
    if (is_registered(db)) {
        pthread_mutex_unlock(&registered_lock);
        Py_RETURN_NONE;
    }
    if (!remember_handle(db)) {
        pthread_mutex_unlock(&registered_lock);
        return PyErr_NoMemory();
    }
    pthread_mutex_unlock(&registered_lock);
    /* The handle is the function's user data, so its destructor knows which to forget. */
    int status = sqlite3_create_function_v2(
        db, "imchat_spaced", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, db,
        imchat_spaced, NULL, NULL, forget_handle);
    if (status != SQLITE_OK) {
        /* SQLite has already called the destructor (it does on failure), forgetting the handle */
        PyErr_Format(PyExc_RuntimeError, "sqlite3_create_function_v2: %s", sqlite3_errstr(status));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"load_table", load_table, METH_O,
     "load_table(table): the spacing table (code point -> replacement), once a process"},
    {"install", install, METH_O,
     "install(connection): register imchat_spaced(text) in C on a sqlite3.Connection"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_spacing",
    "imchat_spaced for SQLite in C (see app/service/search/_spacing.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spacing(void) { return PyModule_Create(&module_definition); }
