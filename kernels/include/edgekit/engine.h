/* edgekit native engine, plain C API: load a compressed artifact folder and run token ids, no Python.
 *
 *   ek_engine *e;
 *   if (ek_engine_load("out/bbc", 2, &e) != EK_ENGINE_OK) { fprintf(stderr, "%s\n", ek_engine_last_error()); ... }
 *   int64_t shape[3]; int rank;
 *   ek_engine_output_dims(e, 1, seq, shape, &rank);      // [batch, width] or, per token, [batch, seq, width]
 *   ek_engine_run(e, ids, mask, 1, seq, out, shape[0] * shape[1] * shape[2]);
 *   ek_engine_free(e);
 *
 * Loading reads DIR/manifest.json, refuses any path in it that is absolute, contains "..", or leads outside the
 * folder (also through symbolic links), and checks the sha256 the manifest lists for each file it reads
 * (native/config.json, native/weights.safetensors): the bytes hashed are the bytes used. Every other listed
 * file's path is checked, not its contents (the engine never reads them).
 *
 * Threads: one engine may be run from several threads (runs of one engine take turns); several engines share
 * the library's one thread pool. Link with -ledgekit (libedgekit.so).
 */
#ifndef EDGEKIT_ENGINE_H
#define EDGEKIT_ENGINE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define EK_ENGINE_EXPORT __attribute__((visibility("default")))

typedef struct ek_engine ek_engine;

typedef enum {
  EK_ENGINE_OK = 0,
  EK_ENGINE_EINVAL = -1,    /* bad argument: null pointer, shapes, token ids out of the vocabulary, mask not 0/1 */
  EK_ENGINE_ENOENT = -2,    /* the folder, its manifest or a file it names does not exist */
  EK_ENGINE_EFORMAT = -3,   /* malformed manifest, native config or weights; a path leaving the folder */
  EK_ENGINE_ECHECKSUM = -4, /* a file does not match the sha256 in the manifest (modified or corrupted) */
  EK_ENGINE_ENOMEM = -5,    /* out of memory */
  EK_ENGINE_ERUNTIME = -6   /* any other failure inside the engine */
} ek_engine_status;

/* Load the native model of artifact folder `artifact_dir` for `threads` threads (>= 1). On success *out holds
 * the engine (free it with ek_engine_free); on failure *out is NULL and the status says why. */
EK_ENGINE_EXPORT int ek_engine_load(const char *artifact_dir, int threads, ek_engine **out);

/* Output shape of a run of `batch` rows: shape[0] = batch, shape[1] = hidden size (feature extraction: pooled
 * embeddings) or number of labels (text classification: logits). Fails (EK_ENGINE_EINVAL) for a model with one
 * output row per token (token classification): use ek_engine_output_dims. */
EK_ENGINE_EXPORT int ek_engine_output_shape(const ek_engine *e, int batch, int64_t shape[2]);

/* Output shape of a run of `batch` rows of `seq` tokens, for every model: *rank = 2 and shape = [batch, width]
 * (shape[2] = 1), or *rank = 3 and shape = [batch, seq, width] for one row per token (token classification: padded
 * positions are zeros). */
EK_ENGINE_EXPORT int ek_engine_output_dims(const ek_engine *e, int batch, int seq, int64_t shape[3], int *rank);

/* The longest sequence a run accepts (the model's and the manifest's limit). */
EK_ENGINE_EXPORT int64_t ek_engine_max_sequence_length(const ek_engine *e);

/* The artifact's task: "feature-extraction" or "text-classification" (valid while the engine lives). */
EK_ENGINE_EXPORT const char *ek_engine_task(const ek_engine *e);

/* Run input_ids and attention_mask ([batch, seq], row-major; mask of 0 and 1) into out, which must hold at
 * least the product of ek_engine_output_dims' shape floats (out_len counts floats). */
EK_ENGINE_EXPORT int ek_engine_run(ek_engine *e, const int64_t *input_ids, const int64_t *attention_mask, int batch,
                                   int seq, float *out, size_t out_len);

EK_ENGINE_EXPORT void ek_engine_free(ek_engine *e);

/* One line saying why the last failing ek_engine_* call of this thread failed ("" if none failed). */
EK_ENGINE_EXPORT const char *ek_engine_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* EDGEKIT_ENGINE_H */
