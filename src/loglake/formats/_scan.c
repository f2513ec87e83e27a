/* One-pass scanner of access-log lines for loglake's fast path (see formats/scan.py).
 *
 * A "program" compiled in Python from an access format lists literals and fields; scan() walks
 * every line once, checking it against the program, and writes an Arrow string view (16 bytes) per
 * field per line that points into the lines' own bytes, so no field is copied. A line the program
 * does not accept is marked not ok and left to the regular expressions: the program accepts only
 * lines the format's fast regular expression accepts, and splits them as it does (tests compare
 * the two on real logs), so it never decides anything the regex would decide otherwise.
 *
 * Ops (one byte each, then arguments; F is a field index byte, 255 = match but do not capture):
 *   1 LIT n bytes[n]   the literal bytes
 *   2 TOKEN F          one or more of 0x21-0x7E (\S+ restricted to ASCII; other lines go to the regex)
 *   3 INT3 F           exactly three ASCII digits
 *   4 DIGITS_DASH F    one or more ASCII digits, or "-"
 *   5 DIGITS F         one or more ASCII digits
 *   6 CLF F            d{1,2}/Mon/yyyy:hh:mm:ss +zzzz (the brackets around it are literals)
 *   7 QUOTED F         any bytes but '"' and '\' (zero or more)
 *   8 QUOTED_LAST F    any bytes but '"', '\', CR, LF; then an optional '"' and the end of the line
 *   9 REQUEST M P Q V  [A-Z]+ ' ' path [?query] ' ' HTTP/[0-9.]+ (query null when absent)
 *  10 END              the end of the line
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { LIT = 1, TOKEN, INT3, DIGITS_DASH, DIGITS, CLF, QUOTED, QUOTED_LAST, REQUEST, END };
#define SKIP 255

typedef struct {
    uint8_t *views;  /* nfields columns of n views */
    uint8_t *valid;  /* nfields columns of n bytes */
    Py_ssize_t n;
    Py_ssize_t nfields;
} Out;

static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline int is_alpha(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static inline void put(Out *o, int field, Py_ssize_t row, const uint8_t *data, int64_t s, int64_t e)
{
    if (field == SKIP || field >= o->nfields) return;
    uint8_t *v = o->views + ((int64_t)field * o->n + row) * 16;
    int32_t len = (int32_t)(e - s);
    memset(v, 0, 16);
    memcpy(v, &len, 4);
    if (len <= 12) {
        memcpy(v + 4, data + s, (size_t)len);
    } else {
        int32_t buffer = 0, offset = (int32_t)s;
        memcpy(v + 4, data + s, 4);
        memcpy(v + 8, &buffer, 4);
        memcpy(v + 12, &offset, 4);
    }
    o->valid[(int64_t)field * o->n + row] = 1;
}

static inline void put_null(Out *o, int field, Py_ssize_t row)
{
    if (field == SKIP || field >= o->nfields) return;
    memset(o->views + ((int64_t)field * o->n + row) * 16, 0, 16);
    o->valid[(int64_t)field * o->n + row] = 0;
}

/* 1 when the line data[p:end] fits the program (fields written), 0 otherwise. */
static int scan_line(const uint8_t *prog, Py_ssize_t plen, const uint8_t *data, int64_t p,
                     int64_t end, Out *o, Py_ssize_t row)
{
    Py_ssize_t i = 0;
    while (i < plen) {
        uint8_t op = prog[i++];
        switch (op) {
        case LIT: {
            uint8_t n = prog[i++];
            if (end - p < n || memcmp(data + p, prog + i, n) != 0) return 0;
            p += n;
            i += n;
            break;
        }
        case TOKEN: {
            int64_t s = p;
            while (p < end && data[p] > 0x20 && data[p] < 0x7f) p++;
            if (p == s) return 0;
            put(o, prog[i++], row, data, s, p);
            break;
        }
        case INT3: {
            if (end - p < 3 || !is_digit(data[p]) || !is_digit(data[p + 1]) || !is_digit(data[p + 2]))
                return 0;
            put(o, prog[i++], row, data, p, p + 3);
            p += 3;
            break;
        }
        case DIGITS_DASH:
        case DIGITS: {
            int64_t s = p;
            if (op == DIGITS_DASH && p < end && data[p] == '-') {
                p++;
            } else {
                while (p < end && is_digit(data[p])) p++;
                if (p == s) return 0;
            }
            put(o, prog[i++], row, data, s, p);
            break;
        }
        case CLF: {
            /* d{1,2}/Mon/yyyy:hh:mm:ss +zzzz */
            static const char shape[] = "/AAA/9999:99:99:99 s9999";
            int64_t s = p;
            int k;
            for (k = 0; k < 2 && p < end && is_digit(data[p]); k++) p++;
            if (k == 0) return 0;
            if (end - p < (int64_t)sizeof(shape) - 1) return 0;
            for (k = 0; shape[k]; k++, p++) {
                uint8_t c = data[p];
                switch (shape[k]) {
                case 'A': if (!is_alpha(c)) return 0; break;
                case '9': if (!is_digit(c)) return 0; break;
                case 's': if (c != '+' && c != '-') return 0; break;
                default: if (c != (uint8_t)shape[k]) return 0;
                }
            }
            put(o, prog[i++], row, data, s, p);
            break;
        }
        case QUOTED: {
            /* memchr (vectorized) finds the closing quote; a backslash before it is an escape,
               left to the regular expressions */
            const uint8_t *q = memchr(data + p, '"', (size_t)(end - p));
            int64_t e = q ? (int64_t)(q - data) : end;
            if (memchr(data + p, '\\', (size_t)(e - p))) return 0;
            put(o, prog[i++], row, data, p, e);
            p = e;
            break;
        }
        case QUOTED_LAST: {
            const uint8_t *q = memchr(data + p, '"', (size_t)(end - p));
            int64_t e = q ? (int64_t)(q - data) : end;
            size_t len = (size_t)(e - p);
            if (memchr(data + p, '\\', len) || memchr(data + p, '\r', len) || memchr(data + p, '\n', len))
                return 0;
            put(o, prog[i++], row, data, p, e);
            p = e;
            if (p < end && data[p] == '"') p++;
            if (p != end) return 0;
            break;
        }
        case REQUEST: {
            uint8_t fm = prog[i], fp = prog[i + 1], fq = prog[i + 2], fv = prog[i + 3];
            int64_t s = p;
            i += 4;
            while (p < end && data[p] >= 'A' && data[p] <= 'Z') p++;
            if (p == s || p >= end || data[p] != ' ') return 0;
            put(o, fm, row, data, s, p);
            s = ++p;
            while (p < end && data[p] != ' ' && data[p] != '"' && data[p] != '?' && data[p] != '\\') p++;
            put(o, fp, row, data, s, p);
            if (p < end && data[p] == '?') {
                s = ++p;
                while (p < end && data[p] != ' ' && data[p] != '"' && data[p] != '\\') p++;
                put(o, fq, row, data, s, p);
            } else {
                put_null(o, fq, row);
            }
            if (end - p < 7 || memcmp(data + p, " HTTP/", 6) != 0) return 0;
            p += 6;
            s = p;
            while (p < end && (is_digit(data[p]) || data[p] == '.')) p++;
            if (p == s) return 0;
            put(o, fv, row, data, s - 5, p);
            break;
        }
        case END:
            return p == end;
        default:
            return 0;
        }
    }
    return p == end;
}

static PyObject *scan(PyObject *self, PyObject *args)
{
    Py_buffer prog, data, offsets, views, valid, ok;
    Py_ssize_t n, nfields, row, good = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*nnw*w*w*", &prog, &data, &offsets, &n, &nfields, &views,
                          &valid, &ok))
        return NULL;
    if (offsets.len < (n + 1) * 8 || views.len < n * nfields * 16 || valid.len < n * nfields ||
        ok.len < n || data.len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "scan: buffers too small for the rows given");
        goto done;
    }
    {
        const int64_t *off = (const int64_t *)offsets.buf;
        const uint8_t *bytes = (const uint8_t *)data.buf;
        uint8_t *okb = (uint8_t *)ok.buf;
        Out o = {(uint8_t *)views.buf, (uint8_t *)valid.buf, n, nfields};
        Py_BEGIN_ALLOW_THREADS
        for (row = 0; row < n; row++) {
            int64_t s = off[row], e = off[row + 1];
            okb[row] = 0;
            if (s >= 0 && e >= s && e <= data.len)
                okb[row] = (uint8_t)scan_line((const uint8_t *)prog.buf, prog.len, bytes, s, e, &o, row);
            if (okb[row]) {
                good++;
            } else {
                for (Py_ssize_t f = 0; f < nfields; f++) put_null(&o, (int)f, row);
            }
        }
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&prog);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&views);
    PyBuffer_Release(&valid);
    PyBuffer_Release(&ok);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(good);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(program, data, offsets, n, nfields, views, valid, ok) -> lines accepted"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
