/* cmd_weights.c - `yoke weights convert IN OUT`: a GPT-2 between the llm.c
 * fp32 weights file and the Hugging Face safetensors layout (model/'s codecs:
 * the input's format is read from its content, the output's from its name). */
#include <stddef.h>
#include <stdio.h>

#include "cli.h"
#include "yk_model.h"

typedef struct convert_opts {
  yk_args_pos pos;
} convert_opts;

static const yk_cmd_spec convert_spec = {
    .name = "weights convert",
    .synopsis = "IN OUT",
    .about = "Convert GPT-2 weights: IN is a GPT-2 fp32 weights file or a Hugging Face GPT-2 model.safetensors\n"
             "(told apart by content); OUT ending in .safetensors is written in the Hugging Face layout\n"
             "(Conv1D matrices transposed, wte without its padding rows), anything else as a GPT-2 fp32\n"
             "weights file (docs/formats.md).",
    .min_pos = 2,
    .max_pos = 2,
    .pos_off = offsetof(convert_opts, pos),
};

static int cmd_convert(int argc, char **argv) {
  convert_opts o = {0};
  int code = cli_parse(&convert_spec, argc, argv, &o);
  if (code >= 0) return code;
  const char *in = o.pos.v[0], *out = o.pos.v[1];
  yk_diag d = {0};
  yk_model_config mc;
  yk_device *dev = NULL;
  yk_model *m = NULL;
  /* a 1x1 batch: the model is only the parameter arena's owner here */
  int rc = yk_model_weights_read_config(in, &mc, &d);
  if (!rc) rc = yk_device_cpu_create(1, YK_ISA_AUTO, &dev, &d);
  if (!rc) rc = yk_model_create(&mc, 1, 1, dev, &m, &d);
  if (!rc) rc = yk_model_weights_load(m, in, &d);
  if (!rc) rc = yk_model_weights_save(m, out, &d);
  if (!rc)
    printf("wrote %s (GPT-2 L=%d C=%d NH=%d V=%d maxT=%d)\n", out, mc.layers, mc.channels, mc.heads, mc.vocab_size,
           mc.max_seq_len);
  else fprintf(stderr, "yoke weights convert: %s\n", yk_diag_msg(&d, rc));
  yk_model_destroy(m);
  yk_device_destroy(dev);
  return rc == 0 ? 0 : rc == YK_ENOTFOUND || rc == YK_ECONFIG ? 2 : 1;
}

static const cli_cmd weights_cmds[] = {
    {"convert", cmd_convert, "GPT-2 weights file <-> Hugging Face model.safetensors"},
};

int cli_cmd_weights(int argc, char **argv) {
  return cli_dispatch("yoke weights", "action", weights_cmds, YK_ARRAY_LEN(weights_cmds), argc, argv);
}
