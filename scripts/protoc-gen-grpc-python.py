"""A protoc plugin that runs grpcio-tools' built-in gRPC Python generator.

grpcio-tools ships the gRPC Python generator compiled into its own protoc, not
as a protoc-gen-* executable, and buf only proxies protoc's own builtins
(python, pyi, ...). This adapter speaks the plugin protocol: it reads buf's
CodeGeneratorRequest from stdin, hands the descriptors to grpcio-tools' protoc
(--descriptor_set_in, so nothing is re-parsed), and returns the files written
to --grpc_python_out as a CodeGeneratorResponse. Run it with the project's venv
(.tools/venv, see scripts/install-codegen.sh) so the generator's version is the
pinned one.
"""

import os
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory(prefix="protoc-gen-grpc-python-") as work:
        descriptors = os.path.join(work, "descriptors.binpb")
        out = os.path.join(work, "out")
        os.mkdir(out)
        with open(descriptors, "wb") as f:
            f.write(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        target = f"{request.parameter}:{out}" if request.parameter else out
        args = ["grpc_tools.protoc", f"--descriptor_set_in={descriptors}", f"--grpc_python_out={target}"]
        exit_code = protoc.main(args + list(request.file_to_generate))
        if exit_code != 0:
            response.error = f"grpc_tools.protoc --grpc_python_out exited with {exit_code}"
        else:
            for directory, _, names in os.walk(out):
                for name in sorted(names):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as f:
                        response.file.add(name=os.path.relpath(path, out), content=f.read())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
