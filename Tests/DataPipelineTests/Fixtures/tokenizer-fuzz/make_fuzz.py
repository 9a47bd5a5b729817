"""Differential fuzz fixture for the tokenizer: random captions over tricky code points, expected
outputs from ALBEF's pre_caption (re-typed from dataset/utils.py) and transformers 4.8.1's slow
BertTokenizer (installed with --no-deps). Same schema as tokenizer-visible; the vocabulary is
../tokenizer-visible/vocab.txt.
Run: python make_fuzz.py OUT_DIR [N] [SEED]   (needs transformers==4.8.1)
"""
import json, random, re, sys, unicodedata
from transformers.models.bert.tokenization_bert import BertTokenizer

def pre_caption(caption, max_words):
    caption = re.sub(r"([,.'!?\"()*#:;~])", '', caption.lower()).replace('-', ' ').replace('/', ' ').replace('<person>', 'person')
    caption = re.sub(r"\s{2,}", ' ', caption)
    caption = caption.rstrip('\n')
    caption = caption.strip(' ')
    words = caption.split(' ')
    if len(words) > max_words:
        caption = ' '.join(words[:max_words])
    return caption

out = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 400; seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
rnd = random.Random(seed)
vocab_path = out + "/../tokenizer-visible/vocab.txt"
tok = BertTokenizer(vocab_path)
words = ["dog", "Café", "naïve", "ΟΔΟΣ", "Σ", "ΣΑΣ", "İstanbul", "straße", "ẞ", "東京", "タワー", "한국어", "ﬁne", "ＡＢＣ", "x²",
         "<person>", "<PERSON>", "</person>", "e-mail", "a/b", "don't", "U.S.A.", "$5", "100%", "C++", "#tag", "@user",
         "🔥", "👨‍👩‍👧", "🇫🇷", "1️⃣", "ǅ", "ﬀ", "Ⅻ", "ⓐ", "Ω", "µ", "ϴ", "ß", "ﬃ", "नमस्ते", "عربى", "עברית", "ไทย",
         "pneumonoultramicroscopicsilicovolcanoconiosis" * 3, "\u00ad", "\u200b", "\ufeff", "\ue000", "\U0001F6DC", "\u0378",
         "\U0001FAE8", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\t", "\r\n", "\u00a0", "\u3000", "\u2003",
         "\u180e", "\u200d", "a\u0301", "\u0301", "e\u0308\u0323", "\u20e3", "ä", "Å", "Ǆ", "ŉ", "ǰ", "ΐ", "\u1e9e", "ＭＡＸ",
         "[CLS]", "[unk]", "~tilde~", "(paren)", "\"quote\"", "semi;colon", "co:lon", "back\\slash", "a_b", "x|y", "x=y", "^", "`", "ǈ",
         "Ꭰ", "ꭰ", "ſ", "K", "Å", "ﬆ", "ꟹ", "\U00010400", "\U0001D400", "\U0002F800", "\U00020000", "〇", "々", "ｶ", "ﾞ"]
seps = [" ", " ", " ", "  ", "\t", "\n", "\u00a0", "-", "/", ", ", ". ", "", "\u3000", " \n", "\n\n"]
caps = []
for i in range(n):
    k = rnd.randint(0, 12)
    s = ""
    for j in range(k):
        s += rnd.choice(words) + rnd.choice(seps)
    if rnd.random() < 0.3:
        s = s.upper() if rnd.random() < 0.5 else s.title()
    if rnd.random() < 0.1:
        s = " ".join(["w%d" % q for q in range(rnd.randint(25, 40))])
    if rnd.random() < 0.25:
        # Random code points from the whole range (no surrogates), with spaces.
        cps = []
        for q in range(rnd.randint(1, 30)):
            r = rnd.random()
            c = rnd.randint(0x20, 0x7f) if r < 0.3 else (rnd.randint(0x80, 0x3000) if r < 0.6 else (rnd.randint(0x3000, 0x10ffff) if r < 0.9 else 0x20))
            if 0xD800 <= c <= 0xDFFF: c = 0x41
            cps.append(chr(c))
        s += "".join(cps)
    if rnd.random() < 0.1:
        s = unicodedata.normalize(rnd.choice(["NFC", "NFD", "NFKC", "NFKD"]), s)
    caps.append(s)
batches, tokens, ids = [], [], []
for b in range(0, n, 16):
    cs = caps[b:b + 16]
    pres = [pre_caption(c, 30) for c in cs]
    rows = []
    for p in pres:
        t = tok.tokenize(p)
        tokens.append(t)
        ids.append(tok.convert_tokens_to_ids(t))
        rows.append([101] + ids[-1][:24])
    L = max(len(r) for r in rows)
    batches.append({"captions": cs, "pre_captions": pres, "input_ids": [r + [0] * (L - len(r)) for r in rows],
                    "attention_mask": [[1] * len(r) + [0] * (L - len(r)) for r in rows]})
json.dump({"kind": "tokenizer", "name": "tokenizer-fuzz", "vocab_file": "../tokenizer-visible/vocab.txt", "vocab_size": 30522,
           "special_ids": {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103},
           "pre_caption_max_words": 30, "max_length": 25, "padding": "longest", "truncation": True, "batch_size": 16,
           "generator": "make_fuzz.py seed %d, transformers 4.8.1 slow BertTokenizer, unicodedata %s" % (seed, unicodedata.unidata_version),
           "batches": batches, "tokens": tokens, "token_ids": ids}, open(out + "/fixture.json", "w"), ensure_ascii=True)
print("wrote", n, "captions")
