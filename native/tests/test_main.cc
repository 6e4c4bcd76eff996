#include <cstring>

#include "test_harness.h"

int main(int argc, char** argv) {
  const char* prefix = argc > 1 ? argv[1] : "";
  int run = 0;
  for (const auto& test : pa_test::registry()) {
    if (std::strncmp(test.name.c_str(), prefix, std::strlen(prefix)) != 0) continue;
    const int before = pa_test::failures();
    test.body();
    ++run;
    std::printf("%s %s\n", pa_test::failures() == before ? "ok  " : "FAIL", test.name.c_str());
  }
  if (run == 0) {
    std::fprintf(stderr, "no test matches '%s'\n", prefix);
    return 2;
  }
  std::printf("%d tests, %d failed checks\n", run, pa_test::failures());
  return pa_test::failures() == 0 ? 0 : 1;
}
