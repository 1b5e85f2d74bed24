# Regenerates hf-reference.jsonl with Hugging Face tokenizers (0.23.2 was used):
#   pip install tokenizers && python3 generate-hf-reference.py <shared folder>
# Line 1: the digest of the ids of a whole corpus file; then one line per edge-case text.
import hashlib, json, random, sys
from tokenizers import Tokenizer
from tokenizers.implementations import ByteLevelBPETokenizer

shared = sys.argv[1]
opt = Tokenizer.from_file(shared + '/models/opt-mini/tokenizer.json')
gpt2 = ByteLevelBPETokenizer(shared + '/tokenizers/gpt2/vocab.json', shared + '/tokenizers/gpt2/merges.txt')

def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False).ids

def digest(values):
    return hashlib.sha256(','.join(map(str, values)).encode()).hexdigest()

corpus = 'data/eval-sotu-1990-2001.txt'
text = open(shared + '/' + corpus, encoding='utf-8').read()
lines = [{'corpus': corpus,
          'gpt2_count': len(ids(gpt2, text)), 'gpt2_sha256': digest(ids(gpt2, text)),
          'opt_mini_count': len(ids(opt, text)), 'opt_mini_sha256': digest(ids(opt, text))}]

texts = ["a\n\n b", "  \n", "x\u00a0y \u00a0 z", "\u3000\u3000a", "\t\t\n  x  \n\n", "HE'S I'M WE'LL 'tis ''s", "don't'll've",
         "a</s>b<s><s> <pad>x<unk>", "</s>", " </s> ", "e\u0301te\u0301", "١٢٣ ½ ²³ Ⅻ", "\r\n\r\n", "x  ", "   ", "",
         "\u2028\u2029\u0085 x", "🚀🔥👍🏽🇩🇪 👨‍👩‍👧", "\ufeffBOM", "ab\u200bcd", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", "\x00\x01\x1f\x7f"]
rnd = random.Random(1)
alphabet = list("abcXYZ 019'\"\n\t.,-_$€é東京🚀\u00a0\u3000\u0301<>/s")
texts += [''.join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40))) for _ in range(300)]
for t in texts:
    opt_ids = ids(opt, t)
    lines.append({'text': t, 'gpt2_ids': ids(gpt2, t), 'opt_mini_ids': opt_ids,
                  'opt_mini_decoded': opt.decode(opt_ids, skip_special_tokens=False)})
with open('hf-reference.jsonl', 'w', encoding='utf-8') as f:
    for line in lines:
        f.write(json.dumps(line, ensure_ascii=False) + '\n')
