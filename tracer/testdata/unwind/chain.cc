// The C++ unwinding workload, built with -O2 -fomit-frame-pointer:
// main -> work::Pipeline::alpha -> beta -> gamma, where gamma alternates
// between spinning and sorting with libc's qsort, whose comparator is a
// static member function.
#include <cstdlib>
#include <vector>

namespace work {

volatile unsigned long sink;

class Pipeline {
public:
	explicit Pipeline(std::size_t n) : data_(n) {}

	__attribute__((noipa)) void alpha()
	{
		beta();
		sink++;
	}

	__attribute__((noipa)) void beta()
	{
		gamma();
		sink++;
	}

	__attribute__((noipa)) void gamma()
	{
		for (;;) {
			unsigned long x = sink;
			for (int i = 0; i < 300000; i++)
				x = x * 31 + i;
			sink = x;
			for (std::size_t i = 0; i < data_.size(); i++)
				data_[i] = static_cast<int>((x >> (i & 31)) ^ i * 2654435761u);
			std::qsort(data_.data(), data_.size(), sizeof(int), &Pipeline::compare);
		}
	}

	__attribute__((noipa)) static int compare(const void *a, const void *b)
	{
		int x = *static_cast<const int *>(a), y = *static_cast<const int *>(b);
		return (x > y) - (x < y);
	}

private:
	std::vector<int> data_;
};

} // namespace work

int main()
{
	work::Pipeline p(4096);
	p.alpha();
	return 0;
}
