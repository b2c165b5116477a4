/* app.service.search._postings: a block's posting rows for MySQL/MariaDB's search index, in C.
 *
 * What it computes is app/service/search/mysql_blocks.py's `posting_rows()` in Python, byte for
 * byte: for each text message of a block (im_message rows as lists of mysql_blocks.COLUMNS, in
 * id order) its conversation keys (mysql_index.conv_keys) and its tokens (text.tokens_of: every
 * CJK character and pair of neighbouring CJK characters of a run, every other word cut at
 * MAX_TOKEN characters), then for each token, in code point order, its postings encoded as
 * mysql_blocks.encode writes them, each in a row of its own or, when under `shared_below`
 * bytes, in its shared row (mysql_blocks.stored_rows); the rows in name order. The Python twin
 * stays the definition: tests/test_search_postings.py compares the two on generated rows of
 * every kind of character.
 *
 * Why C: sealing a block in Python cost ≈ 25-30 µs a message for the tokens and postings and
 * 7-16 µs more for the encoding (bench/NOTES.md), against ≈ 65 µs for storing and delivering the
 * message; the issue allows indexing 15% of that.
 *
 * What this module does not own, it is handed: the folding table (text.fold_table: NFKC and
 * casefold per character from Python's own Unicode data, loaded once by `load_fold_table`), the
 * CJK ranges (text.CJK_RANGES) and the constants of conv_keys. Letters and digits are Python's
 * own `str.isalnum` (Py_UNICODE_ISALNUM), which is what text.py's regex means by `[^\W_]`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t key;
    uint16_t offset;
} Posting;

/* A token's postings: `planned` counted while the texts are cut (`last_message` keeps a
 * message's repeated token to one posting a key), then `items` filled in key and offset order. */
typedef struct {
    Posting *items;
    Py_ssize_t count, planned;
    Py_ssize_t last_message;
} Postings;

/* Each message's tokens (positions in Tokens.all), message after message. */
typedef struct {
    Py_ssize_t *positions;
    Py_ssize_t count, capacity;
} Marks;

/* A text message of the block: its keys, its offset and where its tokens are in Marks. */
typedef struct {
    int64_t keys[2];
    int key_count;
    uint16_t offset;
    Py_ssize_t first, end;
} Message;

/* One message under one of its keys: the order postings are filled in. */
typedef struct {
    int64_t key;
    uint16_t offset;
    Py_ssize_t message;
} Entry;

/* A CJK token's slot: its one or two code points (`cjk_key`) and its position in `all`. */
typedef struct {
    uint64_t key;
    Py_ssize_t position;
} Slot;

typedef struct {
    Postings *all;
    Py_ssize_t count, capacity;
    PyObject *index; /* token (str) -> position in `all` (int): every token */
    /* CJK characters and pairs again, found without making a str: most of a Chinese text's
     * tokens are those, and a str and a dict lookup each cost more than the rest of the work.
     * Open addressing; a key of 0 is an empty slot. */
    Slot *slots;
    Py_ssize_t slot_count, slots_used;
    /* Words the same way, by a hash of their characters (kept in `pool` to tell apart). */
    struct WordSlot *words;
    Py_ssize_t word_slot_count, words_used;
    Py_UCS4 *pool;
    Py_ssize_t pool_used, pool_capacity;
} Tokens;

/* A word's slot: a hash of its characters (0: an empty slot), its position in `all`, and
 * where its characters are in the pool. */
typedef struct WordSlot {
    uint64_t hash;
    Py_ssize_t position, text_at, length;
} WordSlot;

typedef struct {
    Py_UCS4 *low, *high;
    Py_ssize_t count;
} Ranges;

static int is_in(const Ranges *ranges, Py_UCS4 code) {
    for (Py_ssize_t i = 0; i < ranges->count; i++)
        if (ranges->low[i] <= code && code <= ranges->high[i]) return 1;
    return 0;
}

/* What a character is to the tokens: not a letter or digit, a word's, or a CJK one. */
enum { OTHER = 0, WORD = 1, CJK = 2 };

static int kind_of(const Ranges *cjk, Py_UCS4 code) {
    if (!Py_UNICODE_ISALNUM(code)) return OTHER;
    return is_in(cjk, code) ? CJK : WORD;
}

/* kind_of for the BMP, looked up rather than worked out (four Unicode tables and the ranges a
 * character otherwise): made for the CJK ranges last given, again if others come. */
static uint8_t bmp_kind[0x10000];
static Py_UCS4 *bmp_kind_low, *bmp_kind_high;
static Py_ssize_t bmp_kind_ranges = -1;

static int same_ranges(const Ranges *cjk) {
    if (bmp_kind_ranges != cjk->count) return 0;
    for (Py_ssize_t i = 0; i < cjk->count; i++)
        if (bmp_kind_low[i] != cjk->low[i] || bmp_kind_high[i] != cjk->high[i]) return 0;
    return 1;
}

static int make_bmp_kinds(const Ranges *cjk) {
    if (same_ranges(cjk)) return 0;
    Py_UCS4 *low = PyMem_Malloc((size_t)(cjk->count + 1) * sizeof(Py_UCS4));
    Py_UCS4 *high = PyMem_Malloc((size_t)(cjk->count + 1) * sizeof(Py_UCS4));
    if (low == NULL || high == NULL) {
        PyMem_Free(low);
        PyMem_Free(high);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(low, cjk->low, (size_t)cjk->count * sizeof(Py_UCS4));
    memcpy(high, cjk->high, (size_t)cjk->count * sizeof(Py_UCS4));
    for (Py_UCS4 code = 0; code < 0x10000; code++) bmp_kind[code] = (uint8_t)kind_of(cjk, code);
    PyMem_Free(bmp_kind_low);
    PyMem_Free(bmp_kind_high);
    bmp_kind_low = low;
    bmp_kind_high = high;
    bmp_kind_ranges = cjk->count;
    return 0;
}

static inline int kind(const Ranges *cjk, Py_UCS4 code) {
    return code < 0x10000 ? bmp_kind[code] : kind_of(cjk, code);
}

/* The folding, as text.fold applies its table: for each code point of the BMP the length of its
 * replacement in `fold_pool` from `fold_start` (UNCHANGED: itself); beyond the BMP, sorted code
 * points and their replacements. */
#define UNCHANGED 0xFF
static uint8_t fold_length[0x10000];
static uint32_t fold_start[0x10000];
static Py_UCS4 *fold_pool;
static uint32_t *astral_code, *astral_start;
static uint8_t *astral_length;
static Py_ssize_t astral_count;
static int fold_loaded;

typedef struct {
    uint32_t code, start;
    uint8_t length;
} AstralEntry;

static int by_code(const void *a, const void *b) {
    uint32_t left = ((const AstralEntry *)a)->code, right = ((const AstralEntry *)b)->code;
    return left < right ? -1 : left > right;
}

static PyObject *load_fold_table(PyObject *module, PyObject *table) {
    (void)module;
    if (!PyDict_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "the table is a dict of code point -> str");
        return NULL;
    }
    if (fold_loaded) Py_RETURN_NONE; /* one table a process: text.py's, built once */
    Py_ssize_t pool_size = 0, astral = 0, position = 0;
    PyObject *key, *value;
    while (PyDict_Next(table, &position, &key, &value)) {
        long code = PyLong_AsLong(key);
        if (code == -1 && PyErr_Occurred()) return NULL;
        if (code < 0 || code > 0x10FFFF || !PyUnicode_Check(value) ||
            PyUnicode_GET_LENGTH(value) >= UNCHANGED) {
            PyErr_SetString(PyExc_ValueError,
                            "the table maps code points to str of fewer than 255 characters");
            return NULL;
        }
        pool_size += PyUnicode_GET_LENGTH(value);
        if (code > 0xFFFF) astral++;
    }
    Py_UCS4 *pool = PyMem_Malloc((size_t)(pool_size + 1) * sizeof(Py_UCS4));
    AstralEntry *entries = PyMem_Malloc((size_t)(astral + 1) * sizeof(AstralEntry));
    uint32_t *codes = PyMem_Malloc((size_t)(astral + 1) * sizeof(uint32_t));
    uint32_t *starts = PyMem_Malloc((size_t)(astral + 1) * sizeof(uint32_t));
    uint8_t *lengths = PyMem_Malloc((size_t)(astral + 1));
    if (pool == NULL || entries == NULL || codes == NULL || starts == NULL || lengths == NULL) {
        PyErr_NoMemory();
        goto failed;
    }
    memset(fold_length, UNCHANGED, sizeof(fold_length));
    Py_ssize_t used = 0, astral_used = 0;
    position = 0;
    while (PyDict_Next(table, &position, &key, &value)) {
        uint32_t code = (uint32_t)PyLong_AsLong(key);
        Py_ssize_t length = PyUnicode_GET_LENGTH(value);
        if (PyUnicode_AsUCS4(value, pool + used, pool_size + 1 - used, 0) == NULL) goto failed;
        if (code <= 0xFFFF) {
            fold_length[code] = (uint8_t)length;
            fold_start[code] = (uint32_t)used;
        } else {
            entries[astral_used++] = (AstralEntry){code, (uint32_t)used, (uint8_t)length};
        }
        used += length;
    }
    qsort(entries, (size_t)astral_used, sizeof(AstralEntry), by_code);
    for (Py_ssize_t i = 0; i < astral_used; i++) {
        codes[i] = entries[i].code;
        starts[i] = entries[i].start;
        lengths[i] = entries[i].length;
    }
    PyMem_Free(entries);
    fold_pool = pool;
    astral_code = codes;
    astral_start = starts;
    astral_length = lengths;
    astral_count = astral_used;
    fold_loaded = 1;
    Py_RETURN_NONE;
failed:
    PyMem_Free(pool);
    PyMem_Free(entries);
    PyMem_Free(codes);
    PyMem_Free(starts);
    PyMem_Free(lengths);
    return NULL;
}

/* What `code` folds to: `*length` characters at the returned pointer, or NULL for itself. */
static const Py_UCS4 *folded_char(Py_UCS4 code, Py_ssize_t *length) {
    if (code <= 0xFFFF) {
        if (fold_length[code] == UNCHANGED) return NULL;
        *length = fold_length[code];
        return fold_pool + fold_start[code];
    }
    Py_ssize_t low = 0, high = astral_count;
    while (low < high) {
        Py_ssize_t middle = (low + high) / 2;
        if (astral_code[middle] < code) low = middle + 1;
        else high = middle;
    }
    if (low == astral_count || astral_code[low] != code) return NULL;
    *length = astral_length[low];
    return fold_pool + astral_start[low];
}

/* text.fold(content) as UCS4 (PyMem_Malloc'ed, for the caller to free); NULL on failure. */
static Py_UCS4 *fold_text(PyObject *content, Py_ssize_t *folded_length) {
    int kind = PyUnicode_KIND(content);
    const void *data = PyUnicode_DATA(content);
    Py_ssize_t length = PyUnicode_GET_LENGTH(content), size = 0, replaced;
    for (Py_ssize_t i = 0; i < length; i++)
        size += folded_char(PyUnicode_READ(kind, data, i), &replaced) ? replaced : 1;
    Py_UCS4 *out = PyMem_Malloc((size_t)(size + 1) * sizeof(Py_UCS4));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 code = PyUnicode_READ(kind, data, i);
        const Py_UCS4 *replacement = folded_char(code, &replaced);
        if (replacement == NULL) {
            out[at++] = code;
        } else {
            memcpy(out + at, replacement, (size_t)replaced * sizeof(Py_UCS4));
            at += replaced;
        }
    }
    *folded_length = at;
    return out;
}

static void free_tokens(Tokens *tokens) {
    for (Py_ssize_t i = 0; i < tokens->count; i++) free(tokens->all[i].items);
    free(tokens->all);
    free(tokens->slots);
    free(tokens->words);
    free(tokens->pool);
    Py_XDECREF(tokens->index);
}

/* A new token's postings, at the end of `all`; NULL with an exception set on failure. */
static Postings *new_postings(Tokens *tokens, PyObject *token) {
    if (tokens->count == tokens->capacity) {
        Py_ssize_t capacity = tokens->capacity ? 2 * tokens->capacity : 1024;
        Postings *grown = realloc(tokens->all, (size_t)capacity * sizeof(Postings));
        if (grown == NULL) return (Postings *)PyErr_NoMemory();
        tokens->all = grown;
        tokens->capacity = capacity;
    }
    PyObject *position = PyLong_FromSsize_t(tokens->count);
    if (position == NULL) return NULL;
    int failed = PyDict_SetItem(tokens->index, token, position);
    Py_DECREF(position);
    if (failed) return NULL;
    Postings *made = &tokens->all[tokens->count++];
    memset(made, 0, sizeof(*made));
    made->last_message = -1;
    return made;
}

/* The postings of `token`, made when first seen; NULL with an exception set on failure. */
static Postings *postings_of(Tokens *tokens, PyObject *token) {
    PyObject *found = PyDict_GetItemWithError(tokens->index, token);
    if (found != NULL) return &tokens->all[PyLong_AsSsize_t(found)];
    if (PyErr_Occurred()) return NULL;
    return new_postings(tokens, token);
}

/* The slot of a CJK key: its own, or the empty one where it goes. */
static Slot *slot_of(Slot *slots, Py_ssize_t slot_count, uint64_t key) {
    size_t mask = (size_t)slot_count - 1;
    size_t at = (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
    while (slots[at].key != 0 && slots[at].key != key) at = (at + 1) & mask;
    return &slots[at];
}

static int grow_slots(Tokens *tokens) {
    Py_ssize_t count = tokens->slot_count ? 2 * tokens->slot_count : 4096;
    Slot *grown = calloc((size_t)count, sizeof(Slot));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < tokens->slot_count; i++)
        if (tokens->slots[i].key != 0)
            *slot_of(grown, count, tokens->slots[i].key) = tokens->slots[i];
    free(tokens->slots);
    tokens->slots = grown;
    tokens->slot_count = count;
    return 0;
}

static PyObject *token_of(const Py_UCS4 *text, Py_ssize_t start, Py_ssize_t end) {
    return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, text + start, end - start);
}

/* The postings of the CJK token of `length` (1 or 2) characters at `start` of `text`. */
static Postings *cjk_postings_of(Tokens *tokens, const Py_UCS4 *text, Py_ssize_t start,
                                 Py_ssize_t length) {
    /* Code points are below 2**21: two make a key, never 0 (CJK code points are not). */
    uint64_t key = (uint64_t)text[start] << 21;
    if (length == 2) key |= text[start + 1];
    if (2 * (tokens->slots_used + 1) > tokens->slot_count && grow_slots(tokens)) return NULL;
    Slot *slot = slot_of(tokens->slots, tokens->slot_count, key);
    if (slot->key == key) return &tokens->all[slot->position];
    PyObject *token = token_of(text, start, start + length);
    if (token == NULL) return NULL;
    Postings *made = postings_of(tokens, token);
    Py_DECREF(token);
    if (made == NULL) return NULL;
    slot->key = key;
    slot->position = made - tokens->all;
    tokens->slots_used++;
    return made;
}

/* FNV-1a over the code points; never 0 (an empty slot). */
static uint64_t word_hash(const Py_UCS4 *text, Py_ssize_t length) {
    uint64_t hash = 0xCBF29CE484222325ULL;
    for (Py_ssize_t i = 0; i < length; i++) {
        hash ^= text[i];
        hash *= 0x100000001B3ULL;
    }
    return hash | 1;
}

static size_t word_start(uint64_t hash, Py_ssize_t slot_count) {
    return (size_t)(hash ^ (hash >> 29)) & ((size_t)slot_count - 1);
}

static int grow_words(Tokens *tokens) {
    Py_ssize_t count = tokens->word_slot_count ? 2 * tokens->word_slot_count : 4096;
    WordSlot *grown = calloc((size_t)count, sizeof(WordSlot));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < tokens->word_slot_count; i++) {
        if (tokens->words[i].hash == 0) continue;
        size_t at = word_start(tokens->words[i].hash, count);
        while (grown[at].hash != 0) at = (at + 1) & ((size_t)count - 1);
        grown[at] = tokens->words[i];
    }
    free(tokens->words);
    tokens->words = grown;
    tokens->word_slot_count = count;
    return 0;
}

/* The postings of the word of `length` characters at `start` of `text`. */
static Postings *word_postings_of(Tokens *tokens, const Py_UCS4 *text, Py_ssize_t start,
                                  Py_ssize_t length) {
    if (2 * (tokens->words_used + 1) > tokens->word_slot_count && grow_words(tokens))
        return NULL;
    const Py_UCS4 *word = text + start;
    uint64_t hash = word_hash(word, length);
    size_t mask = (size_t)tokens->word_slot_count - 1, at = word_start(hash, tokens->word_slot_count);
    for (; tokens->words[at].hash != 0; at = (at + 1) & mask) {
        WordSlot *slot = &tokens->words[at];
        if (slot->hash == hash && slot->length == length &&
            memcmp(tokens->pool + slot->text_at, word, (size_t)length * sizeof(Py_UCS4)) == 0)
            return &tokens->all[slot->position];
    }
    if (tokens->pool_used + length > tokens->pool_capacity) {
        Py_ssize_t capacity = tokens->pool_capacity ? 2 * tokens->pool_capacity : 65536;
        while (capacity < tokens->pool_used + length) capacity *= 2;
        Py_UCS4 *grown = realloc(tokens->pool, (size_t)capacity * sizeof(Py_UCS4));
        if (grown == NULL) return (Postings *)PyErr_NoMemory();
        tokens->pool = grown;
        tokens->pool_capacity = capacity;
    }
    PyObject *token = token_of(text, start, start + length);
    if (token == NULL) return NULL;
    Postings *made = postings_of(tokens, token);
    Py_DECREF(token);
    if (made == NULL) return NULL;
    memcpy(tokens->pool + tokens->pool_used, word, (size_t)length * sizeof(Py_UCS4));
    tokens->words[at] = (WordSlot){hash, made - tokens->all, tokens->pool_used, length};
    tokens->pool_used += length;
    tokens->words_used++;
    return made;
}

/* Notes that message `message` (keys: `key_count`) has the token (NULL: finding it failed). */
static int note(Postings *postings, Tokens *tokens, Marks *marks, Py_ssize_t message,
                int key_count) {
    if (postings == NULL) return -1;
    if (postings->last_message == message) return 0;
    postings->last_message = message;
    postings->planned += key_count;
    if (marks->count == marks->capacity) {
        Py_ssize_t capacity = marks->capacity ? 2 * marks->capacity : 65536;
        Py_ssize_t *grown = realloc(marks->positions, (size_t)capacity * sizeof(Py_ssize_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        marks->positions = grown;
        marks->capacity = capacity;
    }
    marks->positions[marks->count++] = postings - tokens->all;
    return 0;
}

/* The tokens of one folded text, as text.tokens_of cuts them. */
static int add_text(Tokens *tokens, const Py_UCS4 *text, Py_ssize_t length, const Ranges *cjk,
                    Py_ssize_t max_token, Marks *marks, Py_ssize_t message, int key_count) {
    Py_ssize_t at = 0;
    while (at < length) {
        int run_kind = kind(cjk, text[at]);
        if (run_kind == OTHER) {
            at++;
            continue;
        }
        Py_ssize_t end = at + 1;
        while (end < length && kind(cjk, text[end]) == run_kind) end++;
        if (run_kind == CJK) {
            for (Py_ssize_t i = at; i < end; i++) {
                if (note(cjk_postings_of(tokens, text, i, 1), tokens, marks, message, key_count))
                    return -1;
                if (i + 1 < end && note(cjk_postings_of(tokens, text, i, 2), tokens, marks,
                                        message, key_count))
                    return -1;
            }
        } else {
            Py_ssize_t stop = end - at > max_token ? at + max_token : end;
            if (note(word_postings_of(tokens, text, at, stop - at), tokens, marks, message,
                     key_count))
                return -1;
        }
        at = end;
    }
    return 0;
}

/* A row's columns, in the order of mysql_blocks.COLUMNS. */
enum { ID, CMD, SENDER_ID, DST_USER_ID, COMMUNITY_ID, MEDIA, CONTENT, COLUMNS };
static const char *column_names[COLUMNS] = {"id", "cmd", "sender_id", "dst_user_id",
                                            "community_id", "media", "content"};

/* A row's integer column; -1 with an exception set when not an int. */
static int column(PyObject *row, int index, long long *value) {
    PyObject *item = PySequence_Fast_GET_ITEM(row, index);
    if (!PyLong_Check(item)) {
        PyErr_Format(PyExc_TypeError, "row[%d] (%s) is not an int", index, column_names[index]);
        return -1;
    }
    *value = PyLong_AsLongLong(item);
    return (*value == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* mysql_index.conv_keys of a row; answers how many keys (0-2) or -1 on failure. */
static int conv_keys(PyObject *row, long long group_cmd, long long pair, int64_t *keys) {
    long long cmd, community, sender, receiver;
    if (column(row, CMD, &cmd)) return -1;
    if (cmd == group_cmd) {
        if (column(row, COMMUNITY_ID, &community)) return -1;
        keys[0] = community;
        return 1;
    }
    if (column(row, SENDER_ID, &sender) || column(row, DST_USER_ID, &receiver)) return -1;
    if (sender >= pair || receiver >= pair) return 0;
    keys[0] = -(sender * pair + receiver);
    if (sender == receiver) return 1;
    keys[1] = -(receiver * pair + sender);
    return 2;
}

static int by_key_then_offset(const void *a, const void *b) {
    const Entry *left = a, *right = b;
    if (left->key != right->key) return left->key < right->key ? -1 : 1;
    return (int)left->offset - (int)right->offset;
}

/* Fills every token's postings in key and offset order: the block's messages under each of
 * their keys are sorted once, and each then adds its key and offset to each of its tokens (so
 * no token's postings need sorting: a common token has one a message, thousands a block). */
static int fill(Tokens *tokens, const Marks *marks, const Message *messages,
                Py_ssize_t message_count) {
    Py_ssize_t entry_count = 0;
    for (Py_ssize_t i = 0; i < message_count; i++) entry_count += messages[i].key_count;
    Entry *entries = malloc((size_t)(entry_count + 1) * sizeof(Entry));
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < message_count; i++)
        for (int k = 0; k < messages[i].key_count; k++)
            entries[at++] = (Entry){messages[i].keys[k], messages[i].offset, i};
    qsort(entries, (size_t)entry_count, sizeof(Entry), by_key_then_offset);
    for (Py_ssize_t t = 0; t < tokens->count; t++) {
        Postings *postings = &tokens->all[t];
        postings->items = malloc((size_t)(postings->planned + 1) * sizeof(Posting));
        if (postings->items == NULL) {
            free(entries);
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t e = 0; e < entry_count; e++) {
        const Message *message = &messages[entries[e].message];
        for (Py_ssize_t m = message->first; m < message->end; m++) {
            Postings *postings = &tokens->all[marks->positions[m]];
            postings->items[postings->count++] = (Posting){entries[e].key, entries[e].offset};
        }
    }
    free(entries);
    return 0;
}

static void put_little(unsigned char **at, uint64_t value, int size) {
    for (int i = 0; i < size; i++) *(*at)++ = (unsigned char)(value >> (8 * i));
}

/* mysql_blocks.encode of one token's postings (in key and offset order: `fill`). */
static PyObject *encode(const Postings *postings) {
    Py_ssize_t keys = 0;
    for (Py_ssize_t i = 0; i < postings->count; i++)
        if (i == 0 || postings->items[i].key != postings->items[i - 1].key) keys++;
    Py_ssize_t size = 4 + 8 * keys + 2 * (keys + 1) + 2 * postings->count;
    PyObject *blob = PyBytes_FromStringAndSize(NULL, size);
    if (blob == NULL) return NULL;
    unsigned char *start = (unsigned char *)PyBytes_AS_STRING(blob);
    unsigned char *key_at = start + 4, *start_at = key_at + 8 * keys,
                  *offset_at = start_at + 2 * (keys + 1);
    put_little(&start, (uint64_t)keys, 4);
    for (Py_ssize_t i = 0; i < postings->count; i++) {
        if (i == 0 || postings->items[i].key != postings->items[i - 1].key) {
            put_little(&key_at, (uint64_t)postings->items[i].key, 8);
            put_little(&start_at, (uint64_t)i, 2);
        }
        put_little(&offset_at, postings->items[i].offset, 2);
    }
    put_little(&start_at, (uint64_t)postings->count, 2);
    return blob;
}

static int read_ranges(PyObject *given, Ranges *ranges) {
    PyObject *sequence = PySequence_Fast(given, "cjk_ranges: a sequence of (low, high)");
    if (sequence == NULL) return -1;
    ranges->count = PySequence_Fast_GET_SIZE(sequence);
    ranges->low = PyMem_Calloc((size_t)ranges->count + 1, sizeof(Py_UCS4));
    ranges->high = PyMem_Calloc((size_t)ranges->count + 1, sizeof(Py_UCS4));
    if (ranges->low == NULL || ranges->high == NULL) {
        Py_DECREF(sequence);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < ranges->count; i++) {
        unsigned int low, high;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sequence, i), "II", &low, &high)) {
            Py_DECREF(sequence);
            return -1;
        }
        ranges->low[i] = low;
        ranges->high[i] = high;
    }
    Py_DECREF(sequence);
    return 0;
}

/* mysql_blocks.shared_name: `mark` and the token's first CJK character, or a word's first
 * two characters. */
static PyObject *shared_name(PyObject *token, PyObject *mark, const Ranges *cjk) {
    Py_ssize_t length = PyUnicode_GET_LENGTH(token);
    Py_ssize_t cut = is_in(cjk, PyUnicode_READ_CHAR(token, 0)) ? 1 : (length < 2 ? length : 2);
    PyObject *start = PyUnicode_Substring(token, 0, cut);
    if (start == NULL) return NULL;
    PyObject *name = PyUnicode_Concat(mark, start);
    Py_DECREF(start);
    return name;
}

/* mysql_blocks.encode_shared of a list of (token, postings) in token order. */
static PyObject *encode_shared(PyObject *entries) {
    Py_ssize_t count = PyList_GET_SIZE(entries), postings_size = 0;
    PyObject *tokens = PyList_New(count), *newline = PyUnicode_FromString("\n");
    PyObject *joined = NULL, *blob = NULL;
    if (tokens == NULL || newline == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        PyObject *token = PyTuple_GET_ITEM(entry, 0);
        Py_INCREF(token);
        PyList_SET_ITEM(tokens, i, token);
        postings_size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(entry, 1));
    }
    joined = PyUnicode_Join(newline, tokens);
    Py_ssize_t text_size;
    const char *text = joined ? PyUnicode_AsUTF8AndSize(joined, &text_size) : NULL;
    if (text == NULL) goto done;
    if (count > UINT32_MAX || text_size > UINT32_MAX || postings_size > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a shared row larger than 4 GiB");
        goto done;
    }
    blob = PyBytes_FromStringAndSize(NULL, 8 + 4 * count + text_size + postings_size);
    if (blob == NULL) goto done;
    unsigned char *at = (unsigned char *)PyBytes_AS_STRING(blob);
    unsigned char *postings_at = at + 8 + 4 * count + text_size;
    put_little(&at, (uint64_t)count, 4);
    put_little(&at, (uint64_t)text_size, 4);
    Py_ssize_t end = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *postings = PyTuple_GET_ITEM(PyList_GET_ITEM(entries, i), 1);
        end += PyBytes_GET_SIZE(postings);
        put_little(&at, (uint64_t)end, 4);
        memcpy(postings_at, PyBytes_AS_STRING(postings), (size_t)PyBytes_GET_SIZE(postings));
        postings_at += PyBytes_GET_SIZE(postings);
    }
    memcpy(at, text, (size_t)text_size);
done:
    Py_XDECREF(tokens);
    Py_XDECREF(newline);
    Py_XDECREF(joined);
    return blob;
}

/* Appends (token, postings) to `result`, or to its shared row's list in `shared` when the
 * postings are under `shared_below` bytes (mysql_blocks.stored_rows). */
static int place(PyObject *result, PyObject *shared, PyObject *token, PyObject *postings,
                 Py_ssize_t shared_below, PyObject *mark, const Ranges *cjk) {
    PyObject *entry = PyTuple_Pack(2, token, postings);
    if (entry == NULL) return -1;
    int failed;
    if (PyBytes_GET_SIZE(postings) < shared_below) {
        PyObject *name = shared_name(token, mark, cjk), *entries = NULL;
        if (name != NULL) {
            PyObject *empty = PyList_New(0);
            entries = empty ? PyDict_SetDefault(shared, name, empty) : NULL;
            Py_XDECREF(empty);
        }
        failed = entries == NULL || PyList_Append(entries, entry);
        Py_XDECREF(name);
    } else {
        failed = PyList_Append(result, entry);
    }
    Py_DECREF(entry);
    return failed ? -1 : 0;
}

/* The shared rows of `shared` (name -> entries) onto `result`, which is then put in name
 * order. */
static int add_shared_rows(PyObject *result, PyObject *shared) {
    Py_ssize_t position = 0;
    PyObject *name, *entries;
    while (PyDict_Next(shared, &position, &name, &entries)) {
        PyObject *blob = encode_shared(entries);
        PyObject *row = blob ? PyTuple_Pack(2, name, blob) : NULL;
        Py_XDECREF(blob);
        if (row == NULL || PyList_Append(result, row)) {
            Py_XDECREF(row);
            return -1;
        }
        Py_DECREF(row);
    }
    return PyList_Sort(result);
}

static PyObject *posting_rows(PyObject *self, PyObject *args) {
    PyObject *rows, *cjk_ranges, *mark;
    long long block_size, group_cmd, pair;
    Py_ssize_t max_token, shared_below;
    if (!PyArg_ParseTuple(args, "OLLLnOnU:posting_rows", &rows, &block_size, &group_cmd, &pair,
                          &max_token, &cjk_ranges, &shared_below, &mark))
        return NULL;
    if (!fold_loaded) {
        PyErr_SetString(PyExc_RuntimeError, "load_fold_table() first");
        return NULL;
    }
    /* A token's row counts its ids in uint16, and a one-to-one message is there twice. */
    if (block_size < 1 || 2 * block_size > 0xFFFF || max_token < 1) {
        PyErr_SetString(PyExc_ValueError, "block_size in 1..32767, max_token >= 1");
        return NULL;
    }
    Ranges cjk = {NULL, NULL, 0};
    Tokens tokens = {NULL, 0, 0, PyDict_New(), NULL, 0, 0, NULL, 0, 0, NULL, 0, 0};
    Marks marks = {NULL, 0, 0};
    Message *messages = NULL;
    Py_ssize_t message_count = 0;
    PyObject *sequence = NULL, *result = NULL, *order = NULL, *shared = PyDict_New();
    if (tokens.index == NULL || shared == NULL || read_ranges(cjk_ranges, &cjk) ||
        make_bmp_kinds(&cjk))
        goto done;
    sequence = PySequence_Fast(rows, "rows: a sequence of lists");
    if (sequence == NULL) goto done;
    messages = malloc((size_t)(PySequence_Fast_GET_SIZE(sequence) + 1) * sizeof(Message));
    if (messages == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(sequence); i++) {
        PyObject *row = PySequence_Fast_GET_ITEM(sequence, i);
        if ((!PyList_Check(row) && !PyTuple_Check(row)) ||
            PySequence_Fast_GET_SIZE(row) != COLUMNS) {
            PyErr_Format(PyExc_TypeError, "rows: lists of %d columns", COLUMNS);
            goto done;
        }
        long long media, message_id;
        if (column(row, MEDIA, &media)) goto done;
        PyObject *content = PySequence_Fast_GET_ITEM(row, CONTENT);
        if (media != 1 || content == Py_None) continue;
        if (!PyUnicode_Check(content)) {
            PyErr_SetString(PyExc_TypeError, "row[content] is not a str");
            goto done;
        }
        if (PyUnicode_GET_LENGTH(content) == 0) continue;
        Message *message = &messages[message_count];
        message->key_count = conv_keys(row, group_cmd, pair, message->keys);
        if (message->key_count < 0 || column(row, ID, &message_id)) goto done;
        Py_ssize_t folded_length;
        Py_UCS4 *folded = fold_text(content, &folded_length);
        if (folded == NULL) goto done;
        /* Python's % is never negative here: ids start at 1. */
        message->offset = (uint16_t)((message_id - 1) % block_size);
        message->first = marks.count;
        int failed = add_text(&tokens, folded, folded_length, &cjk, max_token, &marks,
                              message_count, message->key_count);
        message->end = marks.count;
        PyMem_Free(folded);
        if (failed) goto done;
        message_count++;
    }
    if (fill(&tokens, &marks, messages, message_count)) goto done;
    order = PyDict_Keys(tokens.index);
    if (order == NULL || PyList_Sort(order)) goto done;
    result = PyList_New(0);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(order); i++) {
        PyObject *token = PyList_GET_ITEM(order, i);
        Postings *postings = &tokens.all[PyLong_AsSsize_t(PyDict_GetItem(tokens.index, token))];
        if (postings->count == 0) continue; /* a text whose only keys were none */
        PyObject *blob = encode(postings);
        int failed = blob == NULL || place(result, shared, token, blob, shared_below, mark, &cjk);
        Py_XDECREF(blob);
        if (failed) {
            Py_CLEAR(result);
            goto done;
        }
    }
    if (add_shared_rows(result, shared)) Py_CLEAR(result);
done:
    free(messages);
    free(marks.positions);
    Py_XDECREF(shared);
    Py_XDECREF(order);
    Py_XDECREF(sequence);
    free_tokens(&tokens);
    PyMem_Free(cjk.low);
    PyMem_Free(cjk.high);
    return result;
}

static PyMethodDef methods[] = {
    {"posting_rows", posting_rows, METH_VARARGS,
     "posting_rows(rows, block_size, group_cmd, pair, max_token, cjk_ranges, shared_below, "
     "shared_mark): [(name, encoded postings)] of a block's im_message rows, in name order"},
    {"load_fold_table", load_fold_table, METH_O,
     "load_fold_table(table): text.fold's table (code point -> str), once a process"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_postings",
    "A block's posting rows in C (see app/service/search/_postings.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__postings(void) { return PyModule_Create(&module_definition); }
