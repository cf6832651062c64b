/* One-pass decoder from CloudTrail JSON records to Arrow column buffers.
 *
 * Why this exists: importing trail logs spends most of its CPU turning ~1.6 KB JSON records into ~50 typed
 * columns. The library path (Arrow's JSON reader for the fixed columns, msgspec for the free-form objects,
 * Python to build the maps) parses every record two or three times and costs ~25-30 us per event; this
 * scanner reads each record once and appends straight into column builders (~2-4 us per event).
 *
 * It is an accelerator, never a second definition of the semantics: lake/recordscan.py drives it, and any
 * record it cannot convert exactly as the Python converter would (invalid JSON, a duplicated fixed key, a
 * record that is not an object, odd types in odd places) makes `decode` return None so the caller uses the
 * Python path for the whole batch. Values that are stored as compact JSON text (nested values of free-form
 * maps, non-string values in string fields) are copied without whitespace when the copy is provably what
 * orjson would write; anything else (floats, `\u` or `\/` escapes, duplicate keys in nested objects, deep
 * nesting) is handed to the `canon` callback, which returns the text the Python converter would store.
 *
 * The shape to extract is a tree given by the caller:  node = (kind, ((key bytes, node), ...)).
 * Kinds: 0 struct (an object whose known keys feed children), 1 string, 2 bool, 3 map<string,string>
 * (a free-form object), 4 list of struct (the list's single child is the element struct), 5 time (a string
 * that is also read as microseconds since the epoch when it has CloudTrail's own YYYY-MM-DDTHH:MM:SSZ form).
 * `decode(records, spec, canon, ...)` (options at the function) returns, per node in pre-order, a tuple of length and Arrow buffers:
 *   struct: (n, validity)                 string: (n, validity, int32 offsets, data)
 *   bool:   (n, validity, values)         list:   (n, validity, int32 offsets)
 *   map:    (n, validity, int32 offsets, key offsets, key data, value validity, value offsets, value data)
 *   time:   (n, validity, int32 offsets, data, validity of the parsed values, int64 values)
 * A validity entry is None when every slot is valid. Returns None when the batch must take the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum { K_STRUCT = 0, K_STRING = 1, K_BOOL = 2, K_MAP = 3, K_LIST = 4, K_TIME = 5 };
enum { OK = 0, UNSUPPORTED = 1, NOMEM = 2, TOO_DEEP = 3 }; /* TOO_DEEP: nested past 256 levels */

#define MAX_DEPTH 64     /* nested values deeper than this go through `canon` */
#define MAX_KEYS 32      /* nested objects with more keys go through `canon` (duplicate check) */

typedef struct { char *p; Py_ssize_t len, cap; } Buf;

static int buf_grow(Buf *b, Py_ssize_t extra) {
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    char *p = PyMem_RawRealloc(b->p, (size_t)cap);
    if (!p) return NOMEM;
    b->p = p;
    b->cap = cap;
    return OK;
}
static inline int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (b->len + n > b->cap && buf_grow(b, n)) return NOMEM;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return OK;
}
static inline int buf_byte(Buf *b, char c) {
    if (b->len + 1 > b->cap && buf_grow(b, 1)) return NOMEM;
    b->p[b->len++] = c;
    return OK;
}
static inline int buf_i32(Buf *b, Py_ssize_t v) {
    if (v > INT32_MAX) return UNSUPPORTED;
    int32_t x = (int32_t)v;
    return buf_put(b, (const char *)&x, 4);
}
static inline int32_t i32_at(const Buf *b, Py_ssize_t i) {
    int32_t x;
    memcpy(&x, b->p + 4 * i, 4);
    return x;
}

typedef struct Node {
    int kind;
    Py_ssize_t n;        /* slots appended */
    Buf valid;           /* one byte per slot */
    Buf offs;            /* int32, n + 1 entries: string bytes, map entries or list elements */
    Buf data;            /* string bytes; bool values, one byte per slot */
    Py_ssize_t nent;     /* map entries */
    Buf koffs, kdata, voffs, vdata, vvalid;
    Buf tvalid, tvals;   /* time: one byte per slot, int64 microseconds */
    int nchild, hint;    /* hint: the child most likely named by the next key */
    struct Node **child;
    const char **keys;
    Py_ssize_t *klens;
    PyObject *spec;      /* keeps `keys` alive */
} Node;

typedef struct {
    PyObject *canon;
    int trusted;         /* text produced by `canon`: already canonical, no checks */
    int lenient;         /* key scan: skip unknown values unchecked, stop once every field is found */
    int dup;             /* the current record may name a key twice in one object (checked exactly later) */
} Ctx;

#define DUP_POSSIBLE 3   /* `odd` bits: text may differ (1) | a key may be duplicated (2) */
#define NOTE_DUP(cx, odd) do { if ((odd) & 2) (cx)->dup = 1; } while (0)

/* ---- node tree --------------------------------------------------------------------------------- */

static void node_free(Node *nd) {
    if (!nd) return;
    for (int i = 0; i < nd->nchild; i++) node_free(nd->child[i]);
    Buf *bufs[] = {&nd->valid, &nd->offs, &nd->data, &nd->koffs, &nd->kdata, &nd->voffs, &nd->vdata, &nd->vvalid,
                   &nd->tvalid, &nd->tvals};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) PyMem_RawFree(bufs[i]->p);
    PyMem_Free(nd->child);
    PyMem_Free(nd->keys);
    PyMem_Free(nd->klens);
    Py_XDECREF(nd->spec);
    PyMem_Free(nd);
}

static Node *node_new(PyObject *spec) {
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2) {
        PyErr_SetString(PyExc_TypeError, "spec node must be (kind, children)");
        return NULL;
    }
    Node *nd = PyMem_Calloc(1, sizeof(Node));
    if (!nd) { PyErr_NoMemory(); return NULL; }
    nd->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    PyObject *children = PyTuple_GET_ITEM(spec, 1);
    if (PyErr_Occurred() || !PyTuple_Check(children) || nd->kind < 0 || nd->kind > 5) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "bad spec node");
        PyMem_Free(nd);
        return NULL;
    }
    Py_INCREF(spec);
    nd->spec = spec;
    Py_ssize_t nc = PyTuple_GET_SIZE(children);
    if (nc > 64) { PyErr_SetString(PyExc_ValueError, "at most 64 children per node"); node_free(nd); return NULL; }
    if (nc) {
        nd->child = PyMem_Calloc((size_t)nc, sizeof(Node *));
        nd->keys = PyMem_Calloc((size_t)nc, sizeof(char *));
        nd->klens = PyMem_Calloc((size_t)nc, sizeof(Py_ssize_t));
        if (!nd->child || !nd->keys || !nd->klens) { PyErr_NoMemory(); node_free(nd); return NULL; }
    }
    for (Py_ssize_t i = 0; i < nc; i++) {
        PyObject *pair = PyTuple_GET_ITEM(children, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0))) {
            PyErr_SetString(PyExc_TypeError, "children must be (bytes key, node) pairs");
            node_free(nd);
            return NULL;
        }
        nd->keys[i] = PyBytes_AS_STRING(PyTuple_GET_ITEM(pair, 0));
        nd->klens[i] = PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0));
        nd->child[i] = node_new(PyTuple_GET_ITEM(pair, 1));
        nd->nchild = (int)i + 1;
        if (!nd->child[i]) { node_free(nd); return NULL; }
    }
    if ((nd->kind == K_LIST && (nc != 1 || nd->child[0]->kind != K_STRUCT))) {
        PyErr_SetString(PyExc_ValueError, "a list node has exactly one struct child");
        node_free(nd);
        return NULL;
    }
    /* offsets start with 0 */
    if ((nd->kind == K_STRING || nd->kind == K_TIME || nd->kind == K_MAP || nd->kind == K_LIST)
        && buf_i32(&nd->offs, 0)) goto nomem;
    if (nd->kind == K_MAP && (buf_i32(&nd->koffs, 0) || buf_i32(&nd->voffs, 0))) goto nomem;
    return nd;
nomem:
    PyErr_NoMemory();
    node_free(nd);
    return NULL;
}

/* A null slot for a node and, for a struct, every node under it (Arrow struct children have one slot per
 * parent slot). */
static int append_null(Node *nd) {
    int r = buf_byte(&nd->valid, 0);
    if (r) return r;
    switch (nd->kind) {
    case K_TIME:
        if ((r = buf_byte(&nd->tvalid, 0)) || (r = buf_put(&nd->tvals, "\0\0\0\0\0\0\0\0", 8))) return r;
        /* fall through */
    case K_STRING: r = buf_i32(&nd->offs, nd->data.len); break;
    case K_BOOL: r = buf_byte(&nd->data, 0); break;
    case K_MAP: r = buf_i32(&nd->offs, nd->nent); break;
    case K_LIST: r = buf_i32(&nd->offs, nd->child[0]->n); break;
    case K_STRUCT:
        for (int i = 0; i < nd->nchild && !r; i++) r = append_null(nd->child[i]);
        break;
    }
    nd->n++;
    return r;
}

/* ---- scanning ---------------------------------------------------------------------------------- */

static inline const char *ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

/* Bytes that end a run of plain string content. */
static unsigned char STOP[256];

static void init_tables(void) {
    for (int i = 0; i < 0x20; i++) STOP[i] = 1;
    STOP['"'] = 1;
    STOP['\\'] = 1;
}

/* The first byte at or after p that ends plain string content ('"', '\\' or a control character), or end.
 * Strings are most of a record's bytes, so this runs 16 bytes at a time where SSE2 is available. */
static inline const char *string_run(const char *p, const char *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                                   _mm_cmpeq_epi8(_mm_max_epu8(x, ctl), ctl));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && !STOP[(unsigned char)*p]) p++;
    return p;
}

/* Past the JSON value at p without checking it (NULL if the text ends first): for the key scan, which only
 * needs to find its fields; every record it keeps is checked by the full scan afterwards. */
static const char *skip_lenient(const char *p, const char *end) {
    int depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p++;
            for (;;) {
                p = string_run(p, end);
                if (p >= end) return NULL;
                if (*p == '"') { p++; break; }
                p += *p == '\\' ? 2 : 1;
            }
            if (!depth) return p;
            continue;
        }
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') {
            if (!depth) return p; /* the end of the enclosing container: a scalar just ended */
            if (--depth == 0) return p + 1;
        } else if (!depth && (c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t')) return p;
        p++;
    }
    return depth ? NULL : p;
}

static inline int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static int put_utf8(Buf *b, unsigned cp) {
    char s[4];
    int n;
    if (cp < 0x80) { s[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_put(b, s, n);
}

/* A string at *pp (on its opening quote), unescaped into `out` (NULL: only validated). On return *pp is past
 * the closing quote and *escaped says whether it held any escape. */
static int read_string(const char **pp, const char *end, Buf *out, int *escaped) {
    const char *p = *pp + 1;
    *escaped = 0;
    for (;;) {
        const char *run = p;
        p = string_run(p, end);
        if (p >= end) return UNSUPPORTED;
        if (out && p > run && buf_put(out, run, p - run)) return NOMEM;
        char c = *p;
        if (c == '"') { *pp = p + 1; return OK; }
        if (c != '\\') return UNSUPPORTED; /* raw control character: invalid JSON */
        *escaped = 1;
        if (p + 1 >= end) return UNSUPPORTED;
        char e = p[1];
        char lit;
        switch (e) {
        case '"': lit = '"'; break;
        case '\\': lit = '\\'; break;
        case '/': lit = '/'; break;
        case 'b': lit = '\b'; break;
        case 'f': lit = '\f'; break;
        case 'n': lit = '\n'; break;
        case 'r': lit = '\r'; break;
        case 't': lit = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (p + 6 > end || hex4(p + 2, &cp)) return UNSUPPORTED;
            p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return UNSUPPORTED; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p + 6 > end || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return UNSUPPORTED; /* lone high surrogate */
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (out && put_utf8(out, cp)) return NOMEM;
            continue;
        }
        default: return UNSUPPORTED;
        }
        if (out && buf_byte(out, lit)) return NOMEM;
        p += 2;
    }
}

static int literal(const char **pp, const char *end, const char *word, Py_ssize_t n) {
    if (end - *pp < n || memcmp(*pp, word, (size_t)n) != 0) return UNSUPPORTED;
    *pp += n;
    return OK;
}

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A number per JSON's grammar; *plain is 1 for an integer other than -0 (written by orjson as read). */
static int read_number(const char **pp, const char *end, int *plain) {
    const char *p = *pp, *start = p;
    *plain = 1;
    if (p < end && *p == '-') p++;
    if (p >= end) return UNSUPPORTED;
    if (*p == '0') {
        p++;
        if (p - start == 2) *plain = 0; /* -0 */
    } else if (is_digit(*p)) {
        while (p < end && is_digit(*p)) p++;
    } else return UNSUPPORTED;
    if (p < end && *p == '.') {
        *plain = 0;
        p++;
        if (p >= end || !is_digit(*p)) return UNSUPPORTED;
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *plain = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) return UNSUPPORTED;
        while (p < end && is_digit(*p)) p++;
    }
    *pp = p;
    return OK;
}

/* Any JSON value at *pp, copied to `out` as compact JSON (NULL: only validated and skipped). Sets bit 1 of
 * *odd when the copy may differ from what orjson writes for the decoded value (floats, -0, `\u` or `\/`
 * escapes, escaped or duplicate keys, deep or wide objects); the caller then asks `canon`. DUP_POSSIBLE is
 * set too when an object names a key twice, or when that was not checked (an escaped key, more than MAX_KEYS
 * keys): the record is then checked exactly (`duplicate_keys`). */
static int copy_value(const char **pp, const char *end, Buf *out, int depth, int *odd) {
    const char *p = ws(*pp, end);
    if (p >= end) return UNSUPPORTED;
    int r;
    char c = *p;
    if (c == '"') {
        const char *s = p;
        int esc;
        if ((r = read_string(&p, end, NULL, &esc))) return r;
        if (esc) {
            for (const char *q = s + 1; q < p - 1; q++) {
                if (*q == '\\') {
                    if (q[1] == 'u' || q[1] == '/') { *odd |= 1; break; }
                    q++;
                }
            }
        }
        if (out && buf_put(out, s, p - s)) return NOMEM;
    } else if (c == '{' || c == '[') {
        if (depth >= MAX_DEPTH) *odd |= 1;
        if (depth >= 256) return TOO_DEEP;
        const char *ks[MAX_KEYS];
        Py_ssize_t kl[MAX_KEYS];
        int nk = 0;
        char close = c == '{' ? '}' : ']';
        if (out && buf_byte(out, c)) return NOMEM;
        p = ws(p + 1, end);
        if (p < end && *p == close) {
            p++;
        } else {
            for (;;) {
                if (c == '{') {
                    p = ws(p, end);
                    if (p >= end || *p != '"') return UNSUPPORTED;
                    const char *k = p;
                    int esc;
                    if ((r = read_string(&p, end, NULL, &esc))) return r;
                    if (esc) *odd |= DUP_POSSIBLE;
                    if (!(*odd & 2)) {
                        Py_ssize_t len = p - k;
                        for (int i = 0; i < nk; i++)
                            if (kl[i] == len && memcmp(ks[i], k, (size_t)len) == 0) { *odd |= DUP_POSSIBLE; break; }
                        if (nk < MAX_KEYS) { ks[nk] = k; kl[nk] = len; nk++; }
                        else *odd |= DUP_POSSIBLE;
                    }
                    if (out && buf_put(out, k, p - k)) return NOMEM;
                    p = ws(p, end);
                    if (p >= end || *p != ':') return UNSUPPORTED;
                    p++;
                    if (out && buf_byte(out, ':')) return NOMEM;
                }
                if ((r = copy_value(&p, end, out, depth + 1, odd))) return r;
                p = ws(p, end);
                if (p >= end) return UNSUPPORTED;
                if (*p == ',') {
                    p++;
                    if (out && buf_byte(out, ',')) return NOMEM;
                    continue;
                }
                if (*p != close) return UNSUPPORTED;
                p++;
                break;
            }
        }
        if (out && buf_byte(out, close)) return NOMEM;
    } else if (c == 't' || c == 'f' || c == 'n') {
        const char *s = p;
        if ((r = c == 't' ? literal(&p, end, "true", 4) : c == 'f' ? literal(&p, end, "false", 5)
                          : literal(&p, end, "null", 4))) return r;
        if (out && buf_put(out, s, p - s)) return NOMEM;
    } else {
        const char *s = p;
        int plain;
        if ((r = read_number(&p, end, &plain))) return r;
        if (!plain) *odd |= 1;
        if (out && buf_put(out, s, p - s)) return NOMEM;
    }
    *pp = p;
    return OK;
}

/* `canon`'s text for the JSON value in [start, end): a new reference whose UTF-8 is *s / *n, or NULL (any
 * Python error is cleared: the caller declines the batch). */
static PyObject *canonical(Ctx *cx, const char *start, const char *end, const char **s, Py_ssize_t *n) {
    PyObject *raw = PyBytes_FromStringAndSize(start, end - start);
    if (!raw) { PyErr_Clear(); return NULL; }
    PyObject *text = PyObject_CallOneArg(cx->canon, raw);
    Py_DECREF(raw);
    if (text && PyUnicode_Check(text) && (*s = PyUnicode_AsUTF8AndSize(text, n)) != NULL) return text;
    PyErr_Clear();
    Py_XDECREF(text);
    return NULL;
}

/* Append the compact JSON text of the value at *pp to `out`; through `canon` when a plain copy could differ. */
static int json_text(Ctx *cx, const char **pp, const char *end, Buf *out) {
    const char *start = ws(*pp, end);
    Py_ssize_t mark = out->len;
    int odd = 0;
    int r = copy_value(pp, end, out, 0, &odd);
    NOTE_DUP(cx, odd);
    if (r || !odd || cx->trusted) return r;
    out->len = mark;
    const char *s;
    Py_ssize_t n;
    PyObject *text = canonical(cx, start, *pp, &s, &n);
    if (!text) return UNSUPPORTED;
    r = buf_put(out, s, n);
    Py_DECREF(text);
    return r;
}

/* ---- typed nodes ------------------------------------------------------------------------------- */

static int parse_node(Ctx *cx, Node *nd, const char **pp, const char *end);

static int parse_string_leaf(Ctx *cx, Node *nd, const char **pp, const char *end) {
    const char *p = *pp;
    int r, esc;
    if (*p == '"') r = read_string(&p, end, &nd->data, &esc);
    else if (*p == 'n') r = literal(&p, end, "null", 4);
    else r = json_text(cx, &p, end, &nd->data);
    if (r) return r;
    if ((r = buf_byte(&nd->valid, **pp != 'n')) || (r = buf_i32(&nd->offs, nd->data.len))) return r;
    nd->n++;
    *pp = p;
    return OK;
}

static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int64_t)era * 146097 + doe - 719468;
}

static int digits(const char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Microseconds since the epoch for CloudTrail's own format, YYYY-MM-DDTHH:MM:SSZ; -1 for anything else
 * (the caller parses the other forms CloudTrail archives hold). */
static int parse_canonical_time(const char *s, Py_ssize_t n, int64_t *us) {
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z')
        return -1;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 59) return -1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap)) return -1;
    *us = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + se;
    *us *= 1000000;
    return 0;
}

static int parse_time_leaf(Ctx *cx, Node *nd, const char **pp, const char *end) {
    Py_ssize_t start = nd->data.len;
    int r = parse_string_leaf(cx, nd, pp, end);
    if (r) return r;
    int64_t us = 0;
    int ok = nd->valid.p[nd->n - 1] && parse_canonical_time(nd->data.p + start, nd->data.len - start, &us) == 0;
    if ((r = buf_byte(&nd->tvalid, (char)ok)) || (r = buf_put(&nd->tvals, (const char *)&us, 8))) return r;
    return OK;
}

/* Python's `_bool`: true/false, or a string that strips and lower-cases to "true"/"false"; else null. */
static int parse_bool_leaf(Ctx *cx, Node *nd, const char **pp, const char *end) {
    const char *p = *pp;
    int r, value = -1;
    (void)cx;
    if (*p == 't') { if ((r = literal(&p, end, "true", 4))) return r; value = 1; }
    else if (*p == 'f') { if ((r = literal(&p, end, "false", 5))) return r; value = 0; }
    else if (*p == '"') {
        const char *s = p + 1;
        int esc;
        if ((r = read_string(&p, end, NULL, &esc))) return r;
        const char *e = p - 1;
        if (esc) return UNSUPPORTED;
        for (const char *q = s; q < e; q++) if ((unsigned char)*q >= 0x80) return UNSUPPORTED;
        while (s < e && *s == ' ') s++;
        while (e > s && e[-1] == ' ') e--;
        if (e - s == 4 && strncasecmp(s, "true", 4) == 0) value = 1;
        else if (e - s == 5 && strncasecmp(s, "false", 5) == 0) value = 0;
    } else {
        int odd = 0;
        if ((r = copy_value(&p, end, NULL, 0, &odd))) return r;
        NOTE_DUP(cx, odd);
    }
    if ((r = buf_byte(&nd->valid, value >= 0)) || (r = buf_byte(&nd->data, value == 1))) return r;
    nd->n++;
    *pp = p;
    return OK;
}

static int parse_map_object(Ctx *cx, Node *nd, const char **pp, const char *end);

/* A free-form object: one map entry per key, strings as-is, null as a null value, anything else as compact
 * JSON. A duplicated key makes the whole object go through `canon` (Python keeps the last value). */
static int parse_map(Ctx *cx, Node *nd, const char **pp, const char *end) {
    const char *p = *pp;
    int r;
    if (*p != '{') {
        int odd = 0;
        if (*p == 'n') r = literal(&p, end, "null", 4);
        else r = copy_value(&p, end, NULL, 0, &odd);
        if (r) return r;
        NOTE_DUP(cx, odd);
        *pp = p;
        return append_null(nd);
    }
    Py_ssize_t ent0 = nd->nent, k0 = nd->kdata.len, v0 = nd->vdata.len, vv0 = nd->vvalid.len;
    const char *start = p;
    r = parse_map_object(cx, nd, &p, end);
    if (r == -1) { /* duplicate key: the record is refused (cx->dup); its columns are redone from canon's text */
        cx->dup = 1;
        nd->nent = ent0;
        nd->kdata.len = k0;
        nd->vdata.len = v0;
        nd->vvalid.len = vv0;
        nd->koffs.len = 4 * (ent0 + 1);
        nd->voffs.len = 4 * (ent0 + 1);
        const char *q = start;
        int odd = 0;
        if ((r = copy_value(&q, end, NULL, 0, &odd))) return r;
        const char *s;
        Py_ssize_t n;
        PyObject *text = canonical(cx, start, q, &s, &n);
        if (!text) return UNSUPPORTED;
        Ctx trusted = {cx->canon, 1, 0};
        const char *t = s;
        r = parse_map_object(&trusted, nd, &t, s + n);
        Py_DECREF(text);
        if (r) return r < 0 ? UNSUPPORTED : r;
        p = q;
    } else if (r) {
        return r;
    }
    if ((r = buf_byte(&nd->valid, 1)) || (r = buf_i32(&nd->offs, nd->nent))) return r;
    nd->n++;
    *pp = p;
    return OK;
}

/* The entries of a map object; -1 on a duplicate key (entries appended so far are left for the caller). */
static int parse_map_object(Ctx *cx, Node *nd, const char **pp, const char *end) {
    const char *p = ws(*pp + 1, end);
    Py_ssize_t ent0 = nd->nent;
    int r, esc;
    if (p < end && *p == '}') { *pp = p + 1; return OK; }
    for (;;) {
        if (p >= end || *p != '"') return UNSUPPORTED;
        Py_ssize_t kstart = nd->kdata.len;
        if ((r = read_string(&p, end, &nd->kdata, &esc))) return r;
        Py_ssize_t klen = nd->kdata.len - kstart;
        if (!cx->trusted) {
            const char *key = nd->kdata.p + kstart;
            for (Py_ssize_t e = ent0; e < nd->nent; e++) {
                int32_t a = i32_at(&nd->koffs, e), b = i32_at(&nd->koffs, e + 1);
                if (b - a == klen && memcmp(nd->kdata.p + a, key, (size_t)klen) == 0) return -1;
            }
        }
        if ((r = buf_i32(&nd->koffs, nd->kdata.len))) return r;
        p = ws(p, end);
        if (p >= end || *p != ':') return UNSUPPORTED;
        p = ws(p + 1, end);
        if (p >= end) return UNSUPPORTED;
        int valid = 1;
        if (*p == '"') r = read_string(&p, end, &nd->vdata, &esc);
        else if (*p == 'n') { r = literal(&p, end, "null", 4); valid = 0; }
        else r = json_text(cx, &p, end, &nd->vdata);
        if (r) return r;
        if ((r = buf_byte(&nd->vvalid, (char)valid)) || (r = buf_i32(&nd->voffs, nd->vdata.len))) return r;
        nd->nent++;
        p = ws(p, end);
        if (p < end && *p == ',') { p = ws(p + 1, end); continue; }
        if (p < end && *p == '}') { *pp = p + 1; return OK; }
        return UNSUPPORTED;
    }
}

/* The fields of an object into a struct node's children; the slot itself is appended by the caller. */
static int parse_struct_fields(Ctx *cx, Node *nd, const char **pp, const char *end, Py_ssize_t target) {
    const char *p = ws(*pp + 1, end);
    int r, esc, found = 0, nu = 0;
    const char *uk[16];
    Py_ssize_t ul[16];
    if (p < end && *p == '}') { p++; goto done; }
    for (;;) {
        if (p >= end || *p != '"') return UNSUPPORTED;
        const char *k = p + 1;
        if ((r = read_string(&p, end, NULL, &esc))) return r;
        Py_ssize_t klen = p - 1 - k;
        if (esc) return UNSUPPORTED; /* an escaped key may spell a known one */
        Node *ch = NULL;
        /* Records of one source list their keys in the same order: try the field after the last one found
         * before searching. */
        int h = nd->hint;
        if (h < nd->nchild && nd->klens[h] == klen && memcmp(nd->keys[h], k, (size_t)klen) == 0) {
            ch = nd->child[h];
            nd->hint = h + 1;
        } else {
            for (int i = 0; i < nd->nchild; i++)
                if (nd->klens[i] == klen && memcmp(nd->keys[i], k, (size_t)klen) == 0) {
                    ch = nd->child[i];
                    nd->hint = i + 1;
                    break;
                }
        }
        p = ws(p, end);
        if (p >= end || *p != ':') return UNSUPPORTED;
        p = ws(p + 1, end);
        if (p >= end) return UNSUPPORTED;
        if (ch) {
            if (ch->n >= target) return UNSUPPORTED; /* duplicated key: Python keeps the last one */
            if ((r = parse_node(cx, ch, &p, end))) return r;
            if (cx->lenient && ++found == nd->nchild) { p = end; break; }
        } else if (cx->lenient) {
            if (!(p = skip_lenient(p, end))) return UNSUPPORTED;
        } else {
            int odd = 0;
            if (nu < 16) { /* keys the spec does not name are compared among themselves */
                for (int i = 0; i < nu; i++)
                    if (ul[i] == klen && memcmp(uk[i], k, (size_t)klen) == 0) cx->dup = 1;
                uk[nu] = k;
                ul[nu++] = klen;
            } else cx->dup = 1;
            if ((r = copy_value(&p, end, NULL, 0, &odd))) return r;
            NOTE_DUP(cx, odd);
        }
        p = ws(p, end);
        if (p < end && *p == ',') { p = ws(p + 1, end); continue; }
        if (p < end && *p == '}') { p++; break; }
        return UNSUPPORTED;
    }
done:
    for (int i = 0; i < nd->nchild; i++)
        if (nd->child[i]->n < target && (r = append_null(nd->child[i]))) return r;
    *pp = p;
    return OK;
}

static int parse_struct(Ctx *cx, Node *nd, const char **pp, const char *end) {
    const char *p = *pp;
    int r;
    if (*p != '{') { /* null, or a value of another type: a null struct, as in Python */
        int odd = 0;
        if ((r = copy_value(&p, end, NULL, 0, &odd))) return r;
        NOTE_DUP(cx, odd);
        *pp = p;
        return append_null(nd);
    }
    if ((r = buf_byte(&nd->valid, 1))) return r;
    nd->n++;
    if ((r = parse_struct_fields(cx, nd, &p, end, nd->n))) return r;
    *pp = p;
    return OK;
}

static int parse_list(Ctx *cx, Node *nd, const char **pp, const char *end) {
    const char *p = *pp;
    Node *el = nd->child[0];
    int r;
    if (*p != '[') {
        int odd = 0;
        if ((r = copy_value(&p, end, NULL, 0, &odd))) return r;
        NOTE_DUP(cx, odd);
        *pp = p;
        return append_null(nd);
    }
    p = ws(p + 1, end);
    if (p < end && *p == ']') p++;
    else {
        for (;;) {
            if (p >= end) return UNSUPPORTED;
            if (*p == '{') r = parse_struct(cx, el, &p, end);
            else if (*p == 'n') { if ((r = literal(&p, end, "null", 4)) == OK) r = append_null(el); }
            else { /* not a resource: dropped, as in Python */
                int odd = 0;
                r = copy_value(&p, end, NULL, 0, &odd);
                NOTE_DUP(cx, odd);
            }
            if (r) return r;
            p = ws(p, end);
            if (p < end && *p == ',') { p = ws(p + 1, end); continue; }
            if (p < end && *p == ']') { p++; break; }
            return UNSUPPORTED;
        }
    }
    if ((r = buf_byte(&nd->valid, 1)) || (r = buf_i32(&nd->offs, el->n))) return r;
    nd->n++;
    *pp = p;
    return OK;
}

static int parse_node(Ctx *cx, Node *nd, const char **pp, const char *end) {
    switch (nd->kind) {
    case K_STRING: return parse_string_leaf(cx, nd, pp, end);
    case K_BOOL: return parse_bool_leaf(cx, nd, pp, end);
    case K_MAP: return parse_map(cx, nd, pp, end);
    case K_LIST: return parse_list(cx, nd, pp, end);
    case K_TIME: return parse_time_leaf(cx, nd, pp, end);
    default: return parse_struct(cx, nd, pp, end);
    }
}

/* ---- output ------------------------------------------------------------------------------------ */

/* A builder's memory handed to Python without a copy: a read-only buffer object that frees it when the last
 * Arrow array over it goes (copying every column into bytes cost a pass over the data and fresh pages). */
typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t len;
} Block;

static void block_dealloc(Block *b) {
    PyMem_RawFree(b->p);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static int block_getbuffer(Block *b, Py_buffer *view, int flags) {
    static char empty[1];
    return PyBuffer_FillInfo(view, (PyObject *)b, b->p ? b->p : empty, b->len, 1, flags);
}

static PyBufferProcs block_buffer = {(getbufferproc)block_getbuffer, NULL};

static PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lake._recordscan.Block",
    .tp_basicsize = sizeof(Block),
    .tp_dealloc = (destructor)block_dealloc,
    .tp_as_buffer = &block_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory of one column buffer (read-only buffer protocol).",
};

/* The builder's memory as a Block; the builder is left empty. */
static PyObject *bytes_of(Buf *b) {
    Block *out = PyObject_New(Block, &BlockType);
    if (!out) return NULL;
    if (b->p && b->cap - b->len > 65536) { /* give back the growth slack */
        char *q = PyMem_RawRealloc(b->p, (size_t)(b->len ? b->len : 1));
        if (q) b->p = q;
    }
    out->p = b->p;
    out->len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return (PyObject *)out;
}

/* Bit-packed validity from one byte per slot; None when every slot is valid. */
static PyObject *bitmap(const Buf *valid, Py_ssize_t n) {
    Py_ssize_t i;
    for (i = 0; i < n; i++) if (!valid->p[i]) break;
    if (i == n) Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
    if (!out) return NULL;
    unsigned char *bits = (unsigned char *)PyBytes_AS_STRING(out);
    memset(bits, 0, (size_t)((n + 7) / 8));
    for (i = 0; i < n; i++) if (valid->p[i]) bits[i >> 3] |= (unsigned char)(1u << (i & 7));
    return out;
}

static int emit(Node *nd, PyObject *list, int root) {
    PyObject *t = NULL;
    PyObject *valid = root ? (Py_INCREF(Py_None), Py_None) : bitmap(&nd->valid, nd->n);
    if (!valid) return -1;
    switch (nd->kind) {
    case K_STRING:
        t = Py_BuildValue("(nNNN)", nd->n, valid, bytes_of(&nd->offs), bytes_of(&nd->data));
        break;
    case K_BOOL: {
        PyObject *vals = bitmap(&nd->data, nd->n);
        if (vals == Py_None) { /* all true */
            Py_DECREF(vals);
            vals = PyBytes_FromStringAndSize(NULL, (nd->n + 7) / 8);
            if (vals) memset(PyBytes_AS_STRING(vals), 0xFF, (size_t)((nd->n + 7) / 8));
        }
        t = vals ? Py_BuildValue("(nNN)", nd->n, valid, vals) : NULL;
        break;
    }
    case K_MAP:
        t = Py_BuildValue("(nNNNNNNN)", nd->n, valid, bytes_of(&nd->offs), bytes_of(&nd->koffs),
                          bytes_of(&nd->kdata), bitmap(&nd->vvalid, nd->nent), bytes_of(&nd->voffs),
                          bytes_of(&nd->vdata));
        break;
    case K_LIST:
        t = Py_BuildValue("(nNN)", nd->n, valid, bytes_of(&nd->offs));
        break;
    case K_TIME:
        t = Py_BuildValue("(nNNNNN)", nd->n, valid, bytes_of(&nd->offs), bytes_of(&nd->data),
                          bitmap(&nd->tvalid, nd->n), bytes_of(&nd->tvals));
        break;
    default:
        t = Py_BuildValue("(nN)", nd->n, valid);
        break;
    }
    if (!t || PyList_Append(list, t)) { Py_XDECREF(t); return -1; }
    Py_DECREF(t);
    for (int i = 0; i < nd->nchild; i++)
        if (emit(nd->child[i], list, 0)) return -1;
    return 0;
}

/* Whether s[0:n] is valid UTF-8 (as Arrow checks it: no overlong forms, surrogates or code points past
 * U+10FFFF). ASCII, nearly all of a record, is passed 16 bytes at a time. */
static int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
#ifdef __SSE2__
        while (n - i >= 16 && !_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(s + i)))) i += 16;
        if (i >= n) break;
#endif
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F)) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F)) return 0;
            i += 4;
        } else return 0;
    }
    return 1;
}

/* decode(records, spec, canon, *, lenient=False, check=False, max_bytes=-1, order=None, texts=False,
 *        dups=False)
 * `check`: decline a batch holding a record that is not valid UTF-8 or is longer than `max_bytes` (>= 0).
 * `order`: a buffer of int64 positions: the records are read in that order (the rest are left out).
 * `texts`: append (n, int32 offsets, data) of the records' own texts, in the order read.
 * `dups`: append a buffer of the int64 output rows whose record may name a key twice in one object (found
 * while scanning, at no extra pass; the caller checks those few exactly with `duplicate_keys`). */
static PyObject *decode(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"records", "spec", "canon", "lenient", "check", "max_bytes", "order", "texts", "dups",
                            NULL};
    PyObject *records, *spec, *canon, *order = Py_None;
    int lenient = 0, check = 0, texts = 0, dups = 0;
    Py_ssize_t max_bytes = -1;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|$ppnOpp:decode", names, &records, &spec, &canon,
                                     &lenient, &check, &max_bytes, &order, &texts, &dups))
        return NULL;
    if (!PyList_Check(records)) { PyErr_SetString(PyExc_TypeError, "records must be a list of bytes"); return NULL; }
    Py_buffer ord = {0};
    int have_order = order != Py_None;
    if (have_order && PyObject_GetBuffer(order, &ord, PyBUF_SIMPLE)) return NULL;
    const int64_t *pos = have_order ? (const int64_t *)ord.buf : NULL;
    Py_ssize_t count = have_order ? ord.len / 8 : PyList_GET_SIZE(records), total = PyList_GET_SIZE(records);
    Node *root = node_new(spec);
    if (!root) { if (have_order) PyBuffer_Release(&ord); return NULL; }
    if (root->kind != K_STRUCT) {
        node_free(root);
        if (have_order) PyBuffer_Release(&ord);
        PyErr_SetString(PyExc_ValueError, "root must be a struct");
        return NULL;
    }
    Ctx cx = {canon, 0, lenient, 0};
    Buf toffs = {0}, tdata = {0}, flagged = {0};
    int r = texts ? buf_i32(&toffs, 0) : OK;
    if (texts && r == OK) { /* the texts' exact size: one allocation, no growth copies */
        Py_ssize_t size = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            Py_ssize_t at = have_order ? (Py_ssize_t)pos[i] : i;
            PyObject *rec = at >= 0 && at < total ? PyList_GET_ITEM(records, at) : NULL;
            if (rec && PyBytes_Check(rec)) size += PyBytes_GET_SIZE(rec);
        }
        if (buf_grow(&tdata, size + 1) || buf_grow(&toffs, 4 * (count + 1))) r = NOMEM;
    }
    for (Py_ssize_t i = 0; i < count && r == OK; i++) {
        Py_ssize_t at = have_order ? (Py_ssize_t)pos[i] : i;
        if (at < 0 || at >= total) { r = UNSUPPORTED; break; }
        PyObject *rec = PyList_GET_ITEM(records, at);
        if (!PyBytes_Check(rec)) { r = UNSUPPORTED; break; }
        const char *p = PyBytes_AS_STRING(rec), *end = p + PyBytes_GET_SIZE(rec);
        if (check && ((max_bytes >= 0 && end - p > max_bytes) || !utf8_valid((const unsigned char *)p, end - p))) {
            r = UNSUPPORTED;
            break;
        }
        if (texts && ((r = buf_put(&tdata, p, end - p)) || (r = buf_i32(&toffs, tdata.len)))) break;
        p = ws(p, end);
        if (p >= end || *p != '{') { r = UNSUPPORTED; break; }
        root->n++;
        cx.dup = 0;
        if ((r = parse_struct_fields(&cx, root, &p, end, root->n))) break;
        if (!lenient && ws(p, end) != end) r = UNSUPPORTED;
        if (r == OK && dups && cx.dup) {
            int64_t row = (int64_t)i;
            r = buf_put(&flagged, (const char *)&row, 8);
        }
    }
    if (have_order) PyBuffer_Release(&ord);
    PyObject *out = NULL;
    if (r == NOMEM) {
        PyErr_NoMemory();
    } else if (r != OK) {
        Py_INCREF(Py_None);
        out = Py_None;
    } else {
        out = PyList_New(0);
        if (out && emit(root, out, 1)) Py_CLEAR(out);
        if (out && texts) {
            PyObject *t = Py_BuildValue("(nNN)", root->n, bytes_of(&toffs), bytes_of(&tdata));
            if (!t || PyList_Append(out, t)) Py_CLEAR(out);
            Py_XDECREF(t);
        }
        if (out && dups) {
            PyObject *t = PyBytes_FromStringAndSize(flagged.p ? flagged.p : "", flagged.len);
            if (!t || PyList_Append(out, t)) Py_CLEAR(out);
            Py_XDECREF(t);
        }
    }
    PyMem_RawFree(toffs.p);
    PyMem_RawFree(tdata.p);
    PyMem_RawFree(flagged.p);
    node_free(root);
    return out;
}

/* One record of a log file as bytes: as received when it is on one line, else without the whitespace between
 * tokens (what the Python path's compact_json does with msgspec). */
static PyObject *record_bytes(const char *s, const char *e) {
    if (!memchr(s, '\n', (size_t)(e - s)) && !memchr(s, '\r', (size_t)(e - s)))
        return PyBytes_FromStringAndSize(s, e - s);
    Buf b = {0};
    const char *p = s;
    int odd = 0;
    PyObject *out = NULL;
    if (copy_value(&p, e, &b, 0, &odd) == OK) out = PyBytes_FromStringAndSize(b.p ? b.p : "", b.len);
    PyMem_RawFree(b.p);
    return out;
}

/* split(data): the records of a CloudTrail log file's JSON, `{"Records": [...]}`, as a list of bytes (see
 * record_bytes), without building Python objects for their content; None when the text is anything else
 * (another layout, invalid JSON, a repeated "Records" key), which the Python reader then handles. */
static PyObject *split(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    const char *p = view.buf, *end = p + view.len;
    PyObject *list = NULL;
    int found = 0, odd = 0, esc;
    p = ws(p, end);
    if (p >= end || *p != '{') goto decline;
    p = ws(p + 1, end);
    if (p < end && *p == '}') goto decline;
    for (;;) {
        if (p >= end || *p != '"') goto decline;
        const char *k = p + 1;
        if (read_string(&p, end, NULL, &esc)) goto decline;
        int records = !esc && p - 1 - k == 7 && memcmp(k, "Records", 7) == 0;
        p = ws(p, end);
        if (p >= end || *p != ':') goto decline;
        p = ws(p + 1, end);
        if (p >= end) goto decline;
        if (records) {
            if (found || *p != '[') goto decline;
            found = 1;
            list = PyList_New(0);
            if (!list) goto error;
            p = ws(p + 1, end);
            if (p < end && *p == ']') p++;
            else {
                for (;;) {
                    const char *s = p;
                    int cr = copy_value(&p, end, NULL, 0, &odd);
                    PyObject *rec;
                    if (cr == TOO_DEEP) { /* its own failure, not the file's: kept raw for the converter to reject */
                        p = skip_lenient(s, end);
                        if (!p) goto decline;
                        rec = PyBytes_FromStringAndSize(s, p - s);
                    } else if (cr) goto decline;
                    else rec = record_bytes(s, p);
                    if (!rec || PyList_Append(list, rec)) { Py_XDECREF(rec); goto error; }
                    Py_DECREF(rec);
                    p = ws(p, end);
                    if (p < end && *p == ',') { p = ws(p + 1, end); continue; }
                    if (p < end && *p == ']') { p++; break; }
                    goto decline;
                }
            }
        } else if (copy_value(&p, end, NULL, 0, &odd)) goto decline;
        p = ws(p, end);
        if (p < end && *p == ',') { p = ws(p + 1, end); continue; }
        if (p < end && *p == '}') { p++; break; }
        goto decline;
    }
    if (!found || ws(p, end) != end) goto decline;
    PyBuffer_Release(&view);
    return list;
decline:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return NULL;
}

/* split_more(text, state, final): the next records of a `{"Records":[...]}` file read piece by piece, so that
 * a large file is split while it is decompressed, without ever holding its whole text. `text` starts where
 * the previous call stopped (its unconsumed bytes, then the next piece), inside the Records array; `state` is
 * 0 before the first element, 1 after an element, 2 between a comma and the next element. Returns
 * (records, consumed bytes, state, done) or None when the text is not that layout or not valid JSON there
 * (the caller then splits the whole text the usual way, for the exact error). `final`: no more text follows. */
static PyObject *split_more(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    int state, final, done = 0, odd = 0;
    if (!PyArg_ParseTuple(args, "y*ip:split_more", &view, &state, &final)) return NULL;
    const char *start = view.buf, *p = start, *end = start + view.len;
    PyObject *list = PyList_New(0);
    if (!list) { PyBuffer_Release(&view); return NULL; }
    for (;;) {
        const char *q = ws(p, end);
        if (q >= end) break; /* need more text */
        if (state == 1 && *q == ',') { p = q + 1; state = 2; continue; }
        if (state != 2 && *q == ']') { /* the end of Records: only `}` and whitespace may follow */
            q = ws(q + 1, end);
            if (q >= end) { if (final) goto decline; break; }
            if (*q != '}') goto decline;
            q = ws(q + 1, end);
            if (q != end) goto decline;
            p = q;
            done = 1;
            break;
        }
        if (state == 1) goto decline;
        const char *s = q;
        int cr = copy_value(&q, end, NULL, 0, &odd);
        PyObject *rec;
        if (cr == TOO_DEEP) { /* kept raw, as split() does */
            q = skip_lenient(s, end);
            if (!q) { if (final) goto decline; break; }
            if (q == end && !final) break;
            rec = PyBytes_FromStringAndSize(s, q - s);
        } else if (cr) {
            if (final) goto decline;
            break;
        } else {
            if (q == end && !final) break; /* a value ending exactly here (a number) may go on */
            rec = record_bytes(s, q);
        }
        if (!rec || PyList_Append(list, rec)) { Py_XDECREF(rec); Py_DECREF(list); PyBuffer_Release(&view); return NULL; }
        Py_DECREF(rec);
        p = q;
        state = 1;
    }
    if (final && !done) goto decline;
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nnii)", list, (Py_ssize_t)(p - start), state, done);
decline:
    Py_DECREF(list);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* depth_over(records, limit): indexes of the records (bytes) nested deeper than `limit` levels, found without
 * recursion. Python-level JSON readers (msgspec, the json module) recurse once per level, bounded only by
 * Python's recursion limit, which a process may raise (Lake's SQL parser does, for deep queries): a record
 * nested 100,000 deep then overflowed a thread's C stack. Such records are refused before those readers. */
static PyObject *depth_over(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *records;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!n:depth_over", &PyList_Type, &records, &limit)) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (!PyBytes_Check(rec)) continue;
        const char *p = PyBytes_AS_STRING(rec), *end = p + PyBytes_GET_SIZE(rec);
        Py_ssize_t depth = 0;
        int over = 0;
        while (p < end && !over) {
            char c = *p;
            if (c == '"') {
                p++;
                for (;;) {
                    p = string_run(p, end);
                    if (p >= end) break;
                    if (*p == '"') { p++; break; }
                    p += *p == '\\' ? 2 : 1;
                }
                continue;
            }
            if (c == '{' || c == '[') { if (++depth > limit) over = 1; }
            else if (c == '}' || c == ']') depth--;
            p++;
        }
        if (over) {
            PyObject *n = PyLong_FromSsize_t(i);
            if (!n || PyList_Append(out, n)) { Py_XDECREF(n); Py_DECREF(out); return NULL; }
            Py_DECREF(n);
        }
    }
    return out;
}

/* ---- duplicate keys ------------------------------------------------------------------------------ */

/* Readers disagree on a JSON object that names a key twice (orjson, msgspec and the columns keep the last
 * value; other JSON readers of `eventjson` keep the first or fail), so Lake refuses such records. This finds
 * them exactly: keys are compared after unescaping ("\u0061" is "a"), in every object at every depth. */

typedef struct { const char *p; Py_ssize_t n; uint64_t h; } DKey;
typedef struct { DKey *k; Py_ssize_t len, cap; char *scratch; Py_ssize_t used; } DKeys;

/* A cheap key fingerprint (equal keys, equal fingerprints): length and the first and last 8 bytes. */
static uint64_t fnv(const char *p, Py_ssize_t n) {
    uint64_t a = 0, z = 0;
    memcpy(&a, p, (size_t)(n < 8 ? n : 8));
    if (n > 8) memcpy(&z, p + n - (n < 16 ? n - 8 : 8), (size_t)(n < 16 ? n - 8 : 8));
    return (a ^ (z * 0x9E3779B97F4A7C15ULL)) + (uint64_t)n * 0xC2B2AE3D27D4EB4FULL;
}

static int dkey_cmp(const void *a, const void *b) {
    const DKey *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return memcmp(x->p, y->p, (size_t)x->n);
}

enum { D_OK = 0, D_DUP = 1, D_BAD = 2, D_NOMEM = 3 };

/* Checks the keys of the object whose keys are ks->k[from:]; on a duplicate, *dup is one of them. */
static int dkeys_check(DKeys *ks, Py_ssize_t from, DKey *dup) {
    Py_ssize_t n = ks->len - from;
    DKey *k = ks->k + from;
    if (n <= 16) {
        for (Py_ssize_t i = 1; i < n; i++)
            for (Py_ssize_t j = 0; j < i; j++)
                if (k[i].h == k[j].h && k[i].n == k[j].n && memcmp(k[i].p, k[j].p, (size_t)k[i].n) == 0) {
                    *dup = k[i];
                    return D_DUP;
                }
        return D_OK;
    }
    qsort(k, (size_t)n, sizeof(DKey), dkey_cmp);
    for (Py_ssize_t i = 1; i < n; i++)
        if (dkey_cmp(&k[i - 1], &k[i]) == 0) { *dup = k[i]; return D_DUP; }
    return D_OK;
}

static int dup_value(const char **pp, const char *end, DKeys *ks, int depth, DKey *dup) {
    const char *p = ws(*pp, end);
    if (p >= end) return D_BAD;
    char c = *p;
    int r, esc;
    if (c == '{' || c == '[') {
        if (depth > 1100) return D_BAD; /* deeper than any JSON reader here accepts */
        Py_ssize_t from = ks->len;
        char close = c == '{' ? '}' : ']';
        p = ws(p + 1, end);
        if (p < end && *p == close) { *pp = p + 1; return D_OK; }
        for (;;) {
            if (c == '{') {
                p = ws(p, end);
                if (p >= end || *p != '"') return D_BAD;
                const char *k = p;
                if (read_string(&p, end, NULL, &esc)) return D_BAD;
                DKey key = {k + 1, p - k - 2, 0};
                if (esc) { /* unescaped into scratch, which has room for the whole record */
                    Buf b = {ks->scratch + ks->used, 0, (Py_ssize_t)1 << 62};
                    const char *q = k;
                    if (read_string(&q, end, &b, &esc)) return D_BAD;
                    key.p = b.p;
                    key.n = b.len;
                    ks->used += b.len;
                }
                key.h = fnv(key.p, key.n);
                if (ks->len == ks->cap) {
                    Py_ssize_t cap = ks->cap ? ks->cap * 2 : 64;
                    DKey *nk = PyMem_RawRealloc(ks->k, (size_t)cap * sizeof(DKey));
                    if (!nk) return D_NOMEM;
                    ks->k = nk;
                    ks->cap = cap;
                }
                ks->k[ks->len++] = key;
                p = ws(p, end);
                if (p >= end || *p != ':') return D_BAD;
                p++;
            }
            if ((r = dup_value(&p, end, ks, depth + 1, dup))) return r;
            p = ws(p, end);
            if (p < end && *p == ',') { p++; continue; }
            if (p < end && *p == close) { p++; break; }
            return D_BAD;
        }
        if (c == '{' && (r = dkeys_check(ks, from, dup))) return r;
        ks->len = from;
    } else {
        int odd = 0;
        if (c == '"') { if (read_string(&p, end, NULL, &esc)) return D_BAD; }
        else if (copy_value(&p, end, NULL, 0, &odd)) return D_BAD;
    }
    *pp = p;
    return D_OK;
}

/* duplicate_keys(records): [(index, key), ...] for the records (bytes) that name a key twice in one object.
 * Records that are not valid JSON are left out: the converter rejects them for that. */
static PyObject *duplicate_keys(PyObject *self, PyObject *records) {
    (void)self;
    if (!PyList_Check(records)) { PyErr_SetString(PyExc_TypeError, "records must be a list of bytes"); return NULL; }
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    DKeys ks = {0};
    Py_ssize_t scratch_cap = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (!PyBytes_Check(rec)) continue;
        const char *p = PyBytes_AS_STRING(rec), *end = p + PyBytes_GET_SIZE(rec);
        if (PyBytes_GET_SIZE(rec) + 1 > scratch_cap) {
            char *sc = PyMem_RawRealloc(ks.scratch, (size_t)PyBytes_GET_SIZE(rec) + 1);
            if (!sc) { PyErr_NoMemory(); goto fail; }
            ks.scratch = sc;
            scratch_cap = PyBytes_GET_SIZE(rec) + 1;
        }
        ks.len = 0;
        ks.used = 0;
        DKey dup = {0};
        int r = dup_value(&p, end, &ks, 0, &dup);
        if (r == D_NOMEM) { PyErr_NoMemory(); goto fail; }
        if (r == D_DUP) {
            PyObject *t = Py_BuildValue("(ns#)", i, dup.p, dup.n);
            if (!t) { /* not UTF-8: report the key's bytes */
                PyErr_Clear();
                t = Py_BuildValue("(ny#)", i, dup.p, dup.n);
            }
            if (!t || PyList_Append(out, t)) { Py_XDECREF(t); goto fail; }
            Py_DECREF(t);
        }
    }
    PyMem_RawFree(ks.k);
    PyMem_RawFree(ks.scratch);
    return out;
fail:
    PyMem_RawFree(ks.k);
    PyMem_RawFree(ks.scratch);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_VARARGS | METH_KEYWORDS,
     "decode(records, spec, canon, *, lenient, check, max_bytes, order, texts) -> column buffers, or None"},
    {"split", split, METH_O, "split(log file JSON) -> list of record bytes, or None"},
    {"split_more", split_more, METH_VARARGS, "split_more(text, state, final) -> (records, consumed, state, done) or None"},
    {"depth_over", depth_over, METH_VARARGS, "depth_over(records, limit) -> indexes of records nested deeper"},
    {"duplicate_keys", duplicate_keys, METH_O, "duplicate_keys(records) -> [(index, key)] of records naming a key twice"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_recordscan", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__recordscan(void) {
    init_tables();
    if (PyType_Ready(&BlockType) < 0) return NULL;
    return PyModule_Create(&module);
}
