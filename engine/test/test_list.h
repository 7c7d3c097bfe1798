/* Every C test, one TEST_ENTRY each; CMake registers each with ctest. */
TEST_ENTRY(json_values)
TEST_ENTRY(json_numbers)
TEST_ENTRY(json_strings)
TEST_ENTRY(json_errors)
TEST_ENTRY(json_writers)
