package io.dejavu.engine.cuda;

import jcuda.driver.CUdeviceptr;

/**
 * One device allocation. Kernels take raw addresses ({@link #at}), copies take JCuda pointers ({@link #ptr}).
 *
 * @param what names the allocation in out-of-memory messages
 */
record DeviceMemory(CUdeviceptr base, long address, long bytes, String what) {

    long at(long byteOffset) {
        if (byteOffset < 0 || byteOffset > bytes) {
            throw new IndexOutOfBoundsException(what + ": offset " + byteOffset + " outside " + bytes + " bytes");
        }
        return address + byteOffset;
    }

    CUdeviceptr ptr(long byteOffset) {
        at(byteOffset);
        return byteOffset == 0 ? base : base.withByteOffset(byteOffset);
    }

    /** JCuda keeps a device pointer's value protected; a subclass may read its own. */
    static long addressOf(CUdeviceptr p) {
        return new Address(p).value();
    }

    private static final class Address extends CUdeviceptr {
        Address(CUdeviceptr p) {
            super(p, 0);
        }

        long value() {
            return getNativePointer() + getByteOffset();
        }
    }
}
