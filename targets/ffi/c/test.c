/* Links against libcairn.a through include/cairn.h and checks outputs and misuse.
   Built and run by targets/ffi/c-test.sh (for aarch64 under qemu-aarch64, or natively).
   argv[1]: a .cairn model (the digits MLP); argv[2]: its 8 sample inputs (f32 × 64 each);
   argv[3]: a fleet list admitting the two test node seeds below (c/fleet.bin). */
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
  if (argc < 4) { fprintf(stderr, "usage: test MODEL INPUTS FLEET\n"); return 2; }
  size_t mlen = 0, ilen = 0, flen = 0;
  unsigned char *mbytes = slurp(argv[1], &mlen);
  float *inputs = (float *)slurp(argv[2], &ilen);
  unsigned char *fleet = slurp(argv[3], &flen);
  CHECK(mbytes && inputs && fleet, "reading %s / %s / %s", argv[1], argv[2], argv[3]);
  unsigned char authority[32];
  /* The authority's public key for seed 0xA0 x 32 (written by the Rust test that checks c/fleet.bin). */
  static const char auth_hex[] = CAIRN_TEST_AUTHORITY;
  for (int i = 0; i < 32; i++) sscanf(auth_hex + 2 * i, "%2hhx", &authority[i]);
  uint64_t node = 0, node_id = 0;
  CHECK(cairn_sync_node_create((const uint8_t *)"cairn-c-test-node-seed-000000001", fleet, flen, authority, &node, &node_id) == CAIRN_STATUS_OK, "sync node");
  const unsigned short labels[8] = {7, 8, 1, 7, 8, 5, 6, 9};

  uint64_t model = 0;
  CHECK(cairn_model_create(mbytes, mlen, &model) == CAIRN_STATUS_OK, "create");
  size_t in_len = 0, out_len = 0;
  CHECK(cairn_model_size(model, 0, 0, &in_len) == CAIRN_STATUS_OK && in_len == 64, "input size");
  uint64_t mem = 0;
  CHECK(cairn_memory_create(32, 100, &mem) == CAIRN_STATUS_OK, "memory");
  CHECK(cairn_memory_set_origin(mem, node_id) == CAIRN_STATUS_OK, "origin");
  int right = 0;
  float probs[10], feats[32];
  for (int i = 0; i < 8; i++) {
    CHECK(cairn_model_run(model, inputs + 64 * i, 64, 0, probs, 10, &out_len) == CAIRN_STATUS_OK && out_len == 10, "run %d", i);
    int best = 0;
    for (int k = 1; k < 10; k++) if (probs[k] > probs[best]) best = k;
    right += best == labels[i];
    CHECK(cairn_model_run(model, inputs + 64 * i, 64, 1, feats, 32, &out_len) == CAIRN_STATUS_OK && out_len == 32, "features %d", i);
    /* Five observations of each sample (the gate holds one record in five out). */
    for (int k = 0; k < 5; k++)
      CHECK(cairn_memory_add(mem, feats, 32, labels[i], 100, (uint64_t)(5 * i + k), NULL) == CAIRN_STATUS_OK, "add %d", i);
  }
  CHECK(right == 8, "accuracy %d/8", right);
  /* Two threads: sample 7's outputs (in probs, from one thread) byte for byte; a silly
     count is refused. */
  float probs2[10];
  CHECK(cairn_model_set_threads(model, 2) == CAIRN_STATUS_OK, "threads");
  CHECK(cairn_model_run(model, inputs + 64 * 7, 64, 0, probs2, 10, &out_len) == CAIRN_STATUS_OK && out_len == 10, "run on 2 threads");
  CHECK(memcmp(probs, probs2, sizeof probs) == 0, "2 threads changed the outputs");
  CHECK(cairn_model_set_threads(model, 100000) == CAIRN_STATUS_WRONG_LENGTH, "too many threads");
  CHECK(cairn_model_set_threads(model, 1) == CAIRN_STATUS_OK, "one thread");
  // The CPU backend counts its requests (8 classes, 8 feature runs, one on 2 threads).
  CairnBackendStats st;
  CHECK(cairn_model_backend_stats(model, &st) == CAIRN_STATUS_OK && st.requests == 17 && !st.accelerating && st.fallback_segments == 0, "backend stats: %llu requests", (unsigned long long)st.requests);
  unsigned short hit_labels[2];
  float scores[2];
  size_t found = 0;
  CHECK(cairn_memory_query(mem, feats, 32, 2, NULL, hit_labels, scores, &found) == CAIRN_STATUS_OK && found == 2, "query");
  CHECK(hit_labels[0] == 9 && scores[0] > 0.99f, "nearest memory: label %u cosine %f", hit_labels[0], scores[0]);

  /* Learn a head on the memories through the gate, then sync them to a second node
     through a bundle. */
  uint64_t learner = 0;
  float loss = 0;
  CHECK(cairn_learn_create(32, 10, 8, &learner) == CAIRN_STATUS_OK, "learner");
  CHECK(cairn_learn_train(learner, mem, 100, &loss) == CAIRN_STATUS_OK && loss < 0.5f, "train: loss %f", loss);
  /* The same data again gains nothing on held-out records: the gate refuses it. */
  CHECK(cairn_learn_train(learner, mem, 20, NULL) == CAIRN_STATUS_REJECTED, "retrain rejected");
  unsigned short cls = 0;
  CHECK(cairn_learn_predict(learner, feats, 32, &cls) == CAIRN_STATUS_OK && cls == 9, "predict %u", cls);
  size_t added = 0, need = 0;
  CHECK(cairn_sync_add_memory(node, mem, &added) == CAIRN_STATUS_OK && added == 40, "signed %zu", added);
  CHECK(cairn_sync_export(node, 0, NULL, 0, &need) == CAIRN_STATUS_WRONG_LENGTH && need > 0, "bundle size");
  unsigned char *bundle = malloc(need);
  CHECK(cairn_sync_export(node, 0, bundle, need, &need) == CAIRN_STATUS_OK, "export");
  uint64_t node2 = 0;
  CHECK(cairn_sync_node_create((const uint8_t *)"cairn-c-test-node-seed-000000002", fleet, flen, authority, &node2, NULL) == CAIRN_STATUS_OK, "node 2");
  /* Node 2 is bound to its own memory store: what arrives is added to it. */
  uint64_t mem2 = 0;
  size_t len2 = 0;
  CHECK(cairn_memory_create(32, 100, &mem2) == CAIRN_STATUS_OK && cairn_sync_add_memory(node2, mem2, &added) == CAIRN_STATUS_OK, "memory 2");
  size_t stored = 0, resume = 0;
  int complete = 0;
  CHECK(cairn_sync_import(node2, bundle, need, 0, &stored, &complete, &resume) == CAIRN_STATUS_OK && stored == 40 && complete, "import %zu", stored);
  CHECK(cairn_memory_len(mem2, &len2) == CAIRN_STATUS_OK && len2 == 40, "applied to memory 2: %zu", len2);
  bundle[need / 2] ^= 0x55;
  CHECK(cairn_sync_import(node2, bundle, need, 0, &stored, &complete, &resume) == CAIRN_STATUS_OK && stored == 0 && !complete, "tampered bundle");
  CHECK(cairn_learn_free(learner) == CAIRN_STATUS_OK && cairn_sync_node_free(node) == CAIRN_STATUS_OK && cairn_sync_node_free(node2) == CAIRN_STATUS_OK, "free");

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
  CHECK(cairn_memory_free(mem) == CAIRN_STATUS_OK && cairn_memory_free(mem2) == CAIRN_STATUS_OK, "memory free");
  printf("C test: 8/8 classified, nearest memory label %u (cosine %.3f), head trained through the gate (loss %.3f), bundle of %zu bytes synced to a second node, misuse refused with codes\n", hit_labels[0], scores[0], loss, need);
  free(bundle);
  free(fleet);
  free(mbytes);
  free(inputs);
  return 0;
}
