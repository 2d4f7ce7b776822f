/* run_artifact ARTIFACT_DIR: reads one line of space-separated token ids on stdin, runs them as batch 1 (all
 * tokens attended) through the artifact's native model, and prints the output floats on one line.
 *
 *   echo "101 7592 2088 102" | build/c-example/run_artifact out/bbc
 *
 * Exit status: 0 on success, 2 for bad input (usage, token ids, an artifact that is missing, malformed or
 * tampered with), 1 for a failure inside the engine; the reason is one line on stderr. */
#define _POSIX_C_SOURCE 200809L /* getline */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgekit/engine.h"

static int exit_code(int status) {
  return status == EK_ENGINE_ENOMEM || status == EK_ENGINE_ERUNTIME ? 1 : 2;
}

/* Parses the space-separated ids of `line` into a new array; returns how many (-1 on a bad token). */
static long parse_ids(char *line, int64_t **ids) {
  long n = 0, cap = 64;
  *ids = malloc(cap * sizeof **ids);
  for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
    char *end;
    errno = 0;
    long long v = strtoll(tok, &end, 10);
    if (*end || errno) {
      fprintf(stderr, "run_artifact: '%s' is not a token id (integers separated by spaces)\n", tok);
      return -1;
    }
    if (n == cap) *ids = realloc(*ids, (cap *= 2) * sizeof **ids);
    (*ids)[n++] = v;
  }
  return n;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: run_artifact ARTIFACT_DIR < token_ids.txt\n");
    return 2;
  }
  ek_engine *engine;
  int status = ek_engine_load(argv[1], 1, &engine);
  if (status != EK_ENGINE_OK) {
    fprintf(stderr, "run_artifact: %s\n", ek_engine_last_error());
    return exit_code(status);
  }
  char *line = NULL;
  size_t line_cap = 0;
  int64_t *ids = NULL;
  long n = getline(&line, &line_cap, stdin) < 0 ? 0 : parse_ids(line, &ids);
  int rc = 2;
  if (n == 0) fprintf(stderr, "run_artifact: no token ids on stdin (one line of integers separated by spaces)\n");
  if (n > 0) {
    int64_t *mask = malloc(n * sizeof *mask);
    for (long i = 0; i < n; ++i) mask[i] = 1;
    int64_t shape[3];
    int rank;
    ek_engine_output_dims(engine, 1, (int)n, shape, &rank);
    const int64_t count = shape[1] * shape[2]; /* rank 3: one row of shape[2] values per token, in order */
    float *out = malloc(count * sizeof *out);
    status = ek_engine_run(engine, ids, mask, 1, (int)n, out, (size_t)count);
    if (status == EK_ENGINE_OK) {
      for (int64_t j = 0; j < count; ++j) printf(j ? " %.9g" : "%.9g", out[j]);
      printf("\n");
      rc = 0;
    } else {
      fprintf(stderr, "run_artifact: %s\n", ek_engine_last_error());
      rc = exit_code(status);
    }
    free(out);
    free(mask);
  }
  free(ids);
  free(line);
  ek_engine_free(engine);
  return rc;
}
