package flamegraph

import (
	"cmp"
	"slices"
)

// sortByValue sorts xs by value, largest first, then by tie.
func sortByValue[T any](xs []T, value func(T) int64, tie func(a, b T) int) {
	slices.SortFunc(xs, func(a, b T) int {
		return cmp.Or(cmp.Compare(value(b), value(a)), tie(a, b))
	})
}

func cmpString(a, b string, x, y int64) int {
	return cmp.Or(cmp.Compare(a, b), cmp.Compare(x, y))
}
