/* Links against libcairn.a through include/cairn.h and checks outputs and misuse.
   Built and run by targets/ffi/c-test.sh (for aarch64 under qemu-aarch64, or natively).
   argv[1]: a .cairn model (the digits MLP); argv[2]: its 8 sample inputs (f32 × 64 each). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cairn.h"

static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)n);
  if (fread(b, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(b); return NULL; }
  fclose(f);
  *len = (size_t)n;
  return b;
}

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL: " __VA_ARGS__); fprintf(stderr, "\n"); return 1; } } while (0)

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: test MODEL INPUTS\n"); return 2; }
  size_t mlen = 0, ilen = 0;
  unsigned char *mbytes = slurp(argv[1], &mlen);
  float *inputs = (float *)slurp(argv[2], &ilen);
  CHECK(mbytes && inputs, "reading %s / %s", argv[1], argv[2]);
  const unsigned short labels[8] = {7, 8, 1, 7, 8, 5, 6, 9};

  uint64_t model = 0;
  CHECK(cairn_model_create(mbytes, mlen, &model) == CAIRN_STATUS_OK, "create");
  size_t in_len = 0, out_len = 0;
  CHECK(cairn_model_size(model, 0, 0, &in_len) == CAIRN_STATUS_OK && in_len == 64, "input size");
  uint64_t mem = 0;
  CHECK(cairn_memory_create(32, 100, &mem) == CAIRN_STATUS_OK, "memory");
  int right = 0;
  float probs[10], feats[32];
  for (int i = 0; i < 8; i++) {
    CHECK(cairn_model_run(model, inputs + 64 * i, 64, 0, probs, 10, &out_len) == CAIRN_STATUS_OK && out_len == 10, "run %d", i);
    int best = 0;
    for (int k = 1; k < 10; k++) if (probs[k] > probs[best]) best = k;
    right += best == labels[i];
    CHECK(cairn_model_run(model, inputs + 64 * i, 64, 1, feats, 32, &out_len) == CAIRN_STATUS_OK && out_len == 32, "features %d", i);
    CHECK(cairn_memory_add(mem, feats, 32, labels[i], 100, (uint64_t)i, NULL) == CAIRN_STATUS_OK, "add %d", i);
  }
  CHECK(right == 8, "accuracy %d/8", right);
  unsigned short hit_labels[2];
  float scores[2];
  size_t found = 0;
  CHECK(cairn_memory_query(mem, feats, 32, 2, NULL, hit_labels, scores, &found) == CAIRN_STATUS_OK && found == 2, "query");
  CHECK(hit_labels[0] == 9 && scores[0] > 0.99f, "nearest memory: label %u cosine %f", hit_labels[0], scores[0]);

  /* Misuse: codes, never a crash. */
  char msg[128];
  CHECK(cairn_model_run(model, NULL, 64, 0, probs, 10, &out_len) == CAIRN_STATUS_NULL_POINTER, "null input");
  CHECK(cairn_model_run(model, inputs, 63, 0, probs, 10, &out_len) == CAIRN_STATUS_WRONG_LENGTH, "wrong length");
  CHECK(cairn_model_run(mem, inputs, 64, 0, probs, 10, &out_len) == CAIRN_STATUS_BAD_HANDLE, "memory handle as model");
  mbytes[300] ^= 0x10;
  uint64_t bad = 0;
  CHECK(cairn_model_create(mbytes, mlen, &bad) == CAIRN_STATUS_BAD_MODEL, "corrupt model");
  CHECK(cairn_last_error(msg, sizeof msg) > 0 && strstr(msg, "model refused"), "message: %s", msg);
  CHECK(cairn_model_free(model) == CAIRN_STATUS_OK, "free");
  CHECK(cairn_model_free(model) == CAIRN_STATUS_BAD_HANDLE, "double free");
  CHECK(cairn_model_run(model, inputs, 64, 0, probs, 10, &out_len) == CAIRN_STATUS_BAD_HANDLE, "use after free");
  CHECK(cairn_memory_free(mem) == CAIRN_STATUS_OK, "memory free");
  printf("C test: 8/8 classified, nearest memory label %u (cosine %.3f), misuse refused with codes\n", hit_labels[0], scores[0]);
  free(mbytes);
  free(inputs);
  return 0;
}
