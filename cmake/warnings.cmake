add_library(egressd_warnings INTERFACE)
target_compile_options(egressd_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
  -Wnon-virtual-dtor -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough
  $<$<BOOL:${EGRESSD_WERROR}>:-Werror>)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # Boost.Asio trips these under g++ 12 in headers we do not own: the
  # coroutine frame's custom operator new/delete pair is misreported at -O2.
  target_compile_options(egressd_warnings INTERFACE -Wno-maybe-uninitialized
                                                    -Wno-mismatched-new-delete)
endif()
