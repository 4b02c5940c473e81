package plugin_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"

	"github.com/nwc-project/nwc/plugin"
)

// Open a compressed model and read every tensor as float16, the way a server
// fills its weight buffers.
func ExampleOpen() {
	ctx := context.Background()
	m, err := plugin.Open(ctx, "testdata/tiny-rtn.nwc")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	var buf []byte
	for _, t := range m.Tensors() {
		buf, err = m.ReadTensor(ctx, t.Name, plugin.F16, buf)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-20s %v %d bytes as f16\n", t.Name, t.Shape, len(buf))
	}
	// Output:
	// token_embd.weight    [32 64] 4096 bytes as f16
	// blk.0.attn_q.weight  [64 64] 8192 bytes as f16
	// blk.0.ffn_up.weight  [128 64] 16384 bytes as f16
	// output_norm.weight   [64] 128 bytes as f16
}

// Open a model from any io.ReaderAt (a memory buffer, an object-store reader).
func ExampleOpenReaderAt() {
	ctx := context.Background()
	data, err := os.ReadFile("testdata/tiny-rtn.nwc")
	if err != nil {
		log.Fatal(err)
	}
	m, err := plugin.OpenReaderAt(ctx, bytes.NewReader(data), int64(len(data)), plugin.WithName("tiny-rtn.nwc"))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	w, err := m.ReadTensor(ctx, "blk.0.attn_q.weight", plugin.F32, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Format(), len(m.Tensors()), "tensors;", len(w)/4, "weights in blk.0.attn_q.weight")
	// Output: nwc 4 tensors; 4096 weights in blk.0.attn_q.weight
}

// Open a model inside an fs.FS (embed.FS, os.DirFS, a zip archive).
func ExampleOpenFS() {
	ctx := context.Background()
	m, err := plugin.OpenFS(ctx, os.DirFS("testdata"), "tiny-rtn.nwc", plugin.WithPrefetch(2))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Println(m.Tensors()[1].Name, m.Tensors()[1].DType)
	// Output: blk.0.attn_q.weight F32
}
