// A counted, explained skip for Catch2 v2 (which has none): P35_SKIP(reason) ends the current
// case or section and prints one line "P35-SKIP: <case>: <reason>" on stdout, which
// scripts/test.sh finds in meson's test log, prints, and counts in its closing line
// ("tests: N passed, M failed, K skipped"). Never a silent pass.
#pragma once

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

namespace p35::test {

inline void report_skip(const std::string& reason) {
  std::printf("P35-SKIP: %s: %s\n", Catch::getResultCapture().getCurrentTestName().c_str(),
              reason.c_str());
  std::fflush(stdout);
  WARN("skipped: " << reason);
}

}  // namespace p35::test

#define P35_SKIP(reason)                 \
  do {                                   \
    ::p35::test::report_skip(reason);    \
    return;                              \
  } while (false)
