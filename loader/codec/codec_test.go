package codec

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	Register(Codec{Name: "test-takes-both", Takes: TakesUniformLevels | TakesTuneRowScales, NewEncoder: func(Config) (Encoder, error) { return nil, nil }})
	Register(Codec{Name: "test-takes-tune", Takes: TakesTuneRowScales, NewEncoder: func(Config) (Encoder, error) { return nil, nil }})
	both, _, err := Lookup("test-takes-both")
	if err != nil {
		t.Fatal(err)
	}
	tune, _, _ := Lookup("test-takes-tune:arg")
	plain := Codec{Name: "plain"}
	for _, c := range []struct {
		c    Codec
		cfg  Config
		want string // "" = accepted
	}{
		{plain, Config{Bits: 3, FeedbackBlock: 64}, ""},
		{both, Config{UniformLevels: true, TuneRowScales: true}, ""},
		{tune, Config{TuneRowScales: true}, ""},
		{tune, Config{UniformLevels: true}, "codec test-takes-tune does not take uniform levels (codecs that do: test-takes-both)"},
		{plain, Config{TuneRowScales: true}, "codec plain does not take row-scale tuning (codecs that do: test-takes-both, test-takes-tune)"},
	} {
		err := c.c.Check(c.cfg)
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s.Check(%+v) = %v, want %q", c.c.Name, c.cfg, err, c.want)
		}
	}
}
