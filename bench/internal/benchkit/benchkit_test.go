package benchkit

import "testing"

func TestMedianMinMax(t *testing.T) {
	tests := []struct {
		in          []float64
		med, lo, hi float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	}
	for _, tc := range tests {
		in := append([]float64(nil), tc.in...)
		lo, hi := MinMax(tc.in)
		if m := Median(tc.in); m != tc.med || lo != tc.lo || hi != tc.hi {
			t.Errorf("%v: median %v, min %v, max %v", tc.in, m, lo, hi)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Errorf("%v was reordered", in)
			}
		}
	}
	if Median(nil) != 0 {
		t.Error("median of nothing")
	}
}
