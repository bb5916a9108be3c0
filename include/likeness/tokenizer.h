/* likeness/tokenizer.h: the CLIP byte-level BPE tokenizer of Stable Diffusion (OpenAI CLIP's
 * SimpleTokenizer / HF CLIPTokenizer), added tokens for textual inversion, and A1111-style
 * prompt emphasis ("(word:1.3)", "[word]", BREAK) split into 75-token chunks. */
#ifndef LIKENESS_TOKENIZER_H
#define LIKENESS_TOKENIZER_H

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_CLIP_CONTEXT 77 /* ids per sequence the CLIP text encoder takes: BOS + 75 + EOS */
#define LK_CLIP_CHUNK 75   /* content ids per sequence */

typedef struct lk_tokenizer lk_tokenizer;

/* How a sequence is filled after its EOS: with more EOS ids (SD-1.x, CLIP's own padding) or
 * with id 0 (SD-2.x / OpenCLIP). */
typedef enum lk_pad_mode {
    LK_PAD_EOS = 0,
    LK_PAD_ZERO = 1,
} lk_pad_mode;

/* ---- loading ----
 * Text handling, as CLIP does it: the text is decoded as UTF-8 (every invalid or truncated
 * sequence becomes one U+FFFD, as Python's bytes.decode("utf-8", "replace")), runs of Unicode
 * white space become one space, the ends are stripped, and it is lower-cased with Python's
 * full str.lower() rules (final sigma, U+0130). Then it is split by CLIP's pattern
 * <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
 * (Unicode 14 classes), each piece is byte-encoded, gets "</w>" on its last symbol and is
 * merged by BPE rank. ftfy's repairs (mojibake, HTML entities, curly quotes, NFC) are NOT
 * applied: callers that need them clean the text first. */

/* Load dir/vocab.json and dir/merges.txt (the layout of every SD "tokenizer" folder). Strict:
 * malformed files fail with LK_ERR_FORMAT and a one-line message naming file and line
 * (LK_ERR_IO when a file cannot be read). On success *out owns the tokenizer (free with
 * lk_tokenizer_free); on failure *out is NULL. */
lk_status lk_tokenizer_load(lk_tokenizer **out, const char *dir);
/* The same with explicit file paths. merges.txt: a "#version" first line, then one merge
 * "left right" per line, rank = line order; only the first 48,894 merges are used (as CLIP and
 * HF do: 49152 - 256 - 2). Every merge's parts and result, all 512 byte symbols (with and
 * without "</w>"), <|startoftext|> and <|endoftext|> must be in vocab.json. */
lk_status lk_tokenizer_load_files(lk_tokenizer **out, const char *vocab_json,
                                  const char *merges_txt);
/* Free a tokenizer; accepts NULL. */
void lk_tokenizer_free(lk_tokenizer *t);

/* Ids of <|startoftext|> / <|endoftext|>, and the number of ids (vocab.json + added). */
int64_t lk_tokenizer_bos(const lk_tokenizer *t);
int64_t lk_tokenizer_eos(const lk_tokenizer *t);
int64_t lk_tokenizer_vocab_size(const lk_tokenizer *t);

/* ---- encoding ----
 * All encode functions take a const tokenizer and may run on several threads at once (the BPE
 * cache inside is locked); they must not run while lk_tokenizer_add_token* changes it. */

/* Tokenize text into content ids: no BOS/EOS, no truncation. *n receives the number of ids the
 * text has; at most cap of them are written to ids (ids may be NULL when cap is 0), so a caller
 * can size a buffer by calling twice. Never fails on any byte string (LK_ERR_NOMEM, or
 * LK_ERR_INVALID for a NULL argument or a text over 256 MiB, only). */
lk_status lk_tokenizer_bpe(const lk_tokenizer *t, const char *text, int64_t *ids, int cap,
                           int *n);

/* Encode text as the text encoder takes it: ids[0] = BOS, then the first max_len - 2 content ids,
 * then EOS, then padding (pad) up to max_len (77 for SD). max_len must be >= 2. *n_content
 * (optional) receives the number of content ids of the whole text before truncation, so
 * *n_content > max_len - 2 means the text was cut. */
lk_status lk_tokenizer_encode(const lk_tokenizer *t, const char *text, int64_t *ids, int max_len,
                              lk_pad_mode pad, int *n_content);

/* Text of ids, for debugging: tokens are concatenated, byte-decoded (invalid UTF-8 becomes
 * U+FFFD) and "</w>" becomes a space, as CLIP's decode does, and trailing spaces are dropped; an
 * added token's first id gives its text, its further ids "<text>_1", "<text>_2", ....
 * skip_special drops BOS/EOS and id 0 after an EOS (padding). *text receives a NUL-terminated
 * string the caller frees with free(). Fails with LK_ERR_INVALID on an id outside the
 * vocabulary (naming its index), leaving *text NULL. */
lk_status lk_tokenizer_decode(const lk_tokenizer *t, const int64_t *ids, int n, bool skip_special,
                              char **text);

/* ---- vocabulary ---- */

/* Add a token for textual inversion: text (e.g. "<cat-toy>") gets n_vectors consecutive new ids,
 * starting at the current vocab size (49408, 49409, ... for the first one); *first_id (optional)
 * receives the first. In encoded text the token is then matched before pre-tokenization and
 * BPE, like an HF added token: after the same white-space cleanup and lower-casing as the text
 * (so matching ignores case), leftmost-longest, and only as a whole word (no letter or digit
 * may touch a letter or digit at its ends: "sks" matches in "a sks dog", not in "asks"). It
 * expands to its n_vectors ids. 1 <= n_vectors <= 75. Fails with LK_ERR_INVALID on an empty
 * token, a token already added, or one containing <|startoftext|> / <|endoftext|>. Not
 * thread-safe against concurrent encodes of the same tokenizer. */
lk_status lk_tokenizer_add_token_n(lk_tokenizer *t, const char *text, int n_vectors,
                                   int64_t *first_id);
/* lk_tokenizer_add_token_n with one vector. */
lk_status lk_tokenizer_add_token(lk_tokenizer *t, const char *text, int64_t *id);

/* Id of a token: an added token's text (its first id; case and white space as in matching) or a
 * vocab.json key exactly as written there ("cat</w>", "<|endoftext|>"). -1 when there is none. */
int64_t lk_tokenizer_token_id(const lk_tokenizer *t, const char *token);
/* The vocab.json key of id, or an added token's text (NULL when id is out of range). Borrowed:
 * valid while t lives. */
const char *lk_tokenizer_id_to_token(const lk_tokenizer *t, int64_t id);

/* ---- prompt emphasis (AUTOMATIC1111 syntax) ---- */

/* One fragment of a parsed prompt: text with its attention weight, or a BREAK marker. */
typedef struct lk_prompt_frag {
    char *text;    /* NUL-terminated, owned by the array */
    double weight; /* product of the bracket multipliers around the text */
    bool is_break; /* "BREAK": start a new 75-token chunk (text is "BREAK", weight 1) */
} lk_prompt_frag;

/* Parse a prompt as A1111's parse_prompt_attention does: "(x)" multiplies x's weight by 1.1,
 * "[x]" divides it by 1.1, "(x:1.3)" multiplies by 1.3; "\(", "\)", "\[", "\]", "\\" are
 * literal brackets / backslash, a lone "\" is dropped; brackets left open are closed at the end
 * (applying their multiplier), unmatched ")" and "]" are literal text; "BREAK" (upper case,
 * a whole word) splits. Neighbouring fragments of equal weight are merged; an empty prompt gives
 * one fragment "" of weight 1. Deviations from A1111, which would raise or misbehave: a ":" whose
 * number is not a valid decimal ("(a:1.2.3)") is literal text, and BREAK inside brackets is still
 * a break (brackets never weight it). *frags receives an array of *n fragments owned by the
 * caller (free with lk_prompt_frags_free). Never fails on any byte string but for LK_ERR_NOMEM. */
lk_status lk_prompt_parse(const char *prompt, lk_prompt_frag **frags, int *n);
/* Free a fragment array from lk_prompt_parse; accepts NULL. */
void lk_prompt_frags_free(lk_prompt_frag *frags, int n);

typedef struct lk_prompt_opts {
    lk_pad_mode pad;     /* LK_PAD_EOS (SD-1.x) or LK_PAD_ZERO (SD-2.x): after each chunk's EOS */
    bool emphasis;       /* parse brackets and BREAK (A1111 emphasis "Original"); false: the
                          * whole prompt is one fragment of weight 1 (A1111 emphasis "None") */
    int comma_backtrack; /* A1111 "prompt word wrap length limit" (default 20, 0 = off): when a
                          * chunk fills and its last comma is at most this many tokens back, the
                          * tokens after that comma move to the next chunk */
} lk_prompt_opts;

/* The A1111 defaults: LK_PAD_EOS, emphasis on, comma_backtrack 20. */
lk_prompt_opts lk_prompt_opts_default(void);

/* Encode a prompt with emphasis into chunks of LK_CLIP_CONTEXT ids, as A1111's
 * FrozenCLIPEmbedderWithCustomWords does: every fragment of lk_prompt_parse is tokenized on its
 * own, the ids fill chunks of 75 (BREAK and a full chunk start a new one; an added token's ids
 * never straddle two chunks), and each chunk becomes BOS + 75 ids (padded with EOS) + EOS, then
 * padding per opts->pad. weights (optional, same layout) receives each id's fragment weight
 * (1.0 for BOS, EOS and padding). ids and weights hold max_chunks * 77 entries; *n_chunks
 * receives the number of chunks the whole prompt needs (>= 1): when it exceeds max_chunks only
 * the first max_chunks are written, so a caller can cap the prompt or size buffers by calling
 * twice. opts NULL means lk_prompt_opts_default(). Never fails on any byte string but for
 * LK_ERR_NOMEM / LK_ERR_INVALID (max_chunks < 0). */
lk_status lk_prompt_encode_weighted(const lk_tokenizer *t, const char *prompt,
                                    const lk_prompt_opts *opts, int64_t *ids, float *weights,
                                    int max_chunks, int *n_chunks);

/* ---- learning a vocabulary ---- */

typedef struct lk_bpe_learn_opts {
    int vocab_size; /* ids in vocab.json, incl. the 512 byte symbols and the 2 specials
                     * (514..49408, e.g. 6000): at most vocab_size - 514 new tokens are learned */
    int min_count;  /* stop when the best pair occurs fewer times than this (>= 1; 0 = default 2) */
} lk_bpe_learn_opts;

/* Learn byte-level BPE merges from texts[0..n) as CLIP's vocabulary is built, and write
 * dir/vocab.json and dir/merges.txt that lk_tokenizer_load reads.
 * Pieces: every text is cleaned, lower-cased and split exactly as lk_tokenizer_bpe does it (same
 * pattern, bytes_to_unicode symbols, "</w>" on the last symbol of each piece); <|startoftext|>
 * and <|endoftext|> in a text are dropped. Pieces over 1,024 bytes are not learned from.
 * Merging: repeatedly the adjacent symbol pair with the highest count (every adjacent position
 * of every piece, weighted by how often the piece occurs) is merged in every piece, left to
 * right without overlap. Ties: the pair whose (left, right) token texts come first in byte
 * order (compare the left texts' UTF-8 bytes, a prefix before its extensions, then the right).
 * It stops when vocab_size ids are used, when the best count is below min_count, or when no
 * pair is left; pairs whose merged text would exceed 256 bytes are never merged. A merge whose
 * text is already a token (reached by another split) is recorded in merges.txt but takes no new
 * id, so merges.txt may then have more lines than vocab.json has learned tokens.
 * Layout: vocab.json = the 256 byte symbols in bytes_to_unicode order, the same 256 with
 * "</w>", each new token in merge order, "<|startoftext|>", "<|endoftext|>" (ids in that
 * order, one entry per line); merges.txt = "#version: 0.2", then "left right" per merge.
 * dir is created if missing (not its parents); both files are first written to temporary files
 * in dir, then renamed over the old ones (each rename is atomic; a reader between the two
 * renames sees the new merges.txt with the old vocab.json). Deterministic: the same multiset of
 * texts gives byte-identical files whatever their order. Time: one pass over the texts, then
 * each merge rescans only the distinct pieces that contain its pair.
 * Fails with LK_ERR_INVALID on a NULL argument (texts may be NULL only when n is 0), n < 0, a
 * NULL texts[i], vocab_size outside 514..49408, min_count < 0, texts over 256 MiB in all, or
 * when no merge is learned (the loader needs one), writing nothing; LK_ERR_IO when dir or a
 * file cannot be written (the old files are then left as they were, unless the second rename
 * fails); LK_ERR_NOMEM. Thread-safe. */
lk_status lk_bpe_learn(const char *const *texts, int n, const lk_bpe_learn_opts *opts,
                       const char *dir);

#ifdef __cplusplus
}
#endif
#endif
