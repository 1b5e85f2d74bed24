package io.dejavu.model;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A restricted reader for the pickle (protocol 2) of a torch state dict. A pickle is a program that may import and
 * call anything, so this one is interpreted, never run: only the opcodes a state dict uses are understood, and only
 * the globals in {@link #ALLOWED} may appear; anything else is refused with the file and the global named.
 */
final class StateDictPickle {
    /** A storage as the persistent id ('storage', storage type, key, location, element count) describes it. */
    record StorageRef(DType dtype, String key, long elements) {
    }

    /** The arguments of torch._utils._rebuild_tensor_v2: a view of a storage. */
    record TensorRef(StorageRef storage, long offset, long[] shape, long[] stride) {
    }

    private record Global(String name) {
    }

    private static final Object MARK = new Object();
    private static final Object NONE = new Object();
    private static final String ORDERED_DICT = "collections.OrderedDict";
    private static final String REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2";
    private static final String REBUILD_PARAMETER = "torch._utils._rebuild_parameter";
    private static final Map<String, DType> STORAGES = Map.of(
            "torch.HalfStorage", DType.F16, "torch.BFloat16Storage", DType.BF16, "torch.FloatStorage", DType.F32);
    private static final List<String> ALLOWED = List.of(ORDERED_DICT, REBUILD_TENSOR, REBUILD_PARAMETER,
            "torch.HalfStorage", "torch.BFloat16Storage", "torch.FloatStorage");

    private final Path file;
    private final String entry;
    private final ByteBuffer in;
    private final Deque<Object> stack = new ArrayDeque<>();
    private final Map<Long, Object> memo = new HashMap<>();

    private StateDictPickle(Path file, String entry, byte[] pickle) {
        this.file = file;
        this.entry = entry;
        this.in = ByteBuffer.wrap(pickle).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** The state dict pickled in {@code pickle} (entry {@code entry} of {@code file}): tensor name to TensorRef. */
    static Map<String, TensorRef> read(Path file, String entry, byte[] pickle) {
        StateDictPickle reader = new StateDictPickle(file, entry, pickle);
        Object result;
        try {
            result = reader.run();
        } catch (java.nio.BufferUnderflowException e) {
            throw reader.malformed("ends before its STOP opcode (truncated?)");
        } catch (ClassCastException | java.util.NoSuchElementException e) {
            throw reader.malformed("an opcode found operands of the wrong kind at byte " + reader.in.position());
        }
        if (!(result instanceof Map<?, ?> dict)) throw reader.malformed("does not hold a dict of tensors");
        Map<String, TensorRef> tensors = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : dict.entrySet()) {
            if (!(e.getKey() instanceof String name) || !(e.getValue() instanceof TensorRef tensor)) {
                throw reader.malformed("entry " + e.getKey() + " is not a tensor");
            }
            tensors.put(name, tensor);
        }
        return tensors;
    }

    private Object run() {
        while (true) {
            int op = in.get() & 0xFF;
            switch (op) {
                case 0x80 -> { // PROTO
                    int protocol = in.get() & 0xFF;
                    if (protocol > 2) throw malformed("uses pickle protocol " + protocol + "; torch.save writes protocol 2");
                }
                case '.' -> { // STOP
                    return stack.pop();
                }
                case '(' -> stack.push(MARK);
                case '}' -> stack.push(new LinkedHashMap<>()); // EMPTY_DICT
                case ')' -> stack.push(List.of()); // EMPTY_TUPLE
                case 'N' -> stack.push(NONE);
                case 0x88 -> stack.push(Boolean.TRUE); // NEWTRUE
                case 0x89 -> stack.push(Boolean.FALSE); // NEWFALSE
                case 'K' -> stack.push((long) (in.get() & 0xFF)); // BININT1
                case 'M' -> stack.push((long) (in.getShort() & 0xFFFF)); // BININT2
                case 'J' -> stack.push((long) in.getInt()); // BININT
                case 0x8a -> stack.push(long1(in.get() & 0xFF)); // LONG1
                case 'X' -> stack.push(utf8(in.getInt())); // BINUNICODE
                case 'q' -> memo.put((long) (in.get() & 0xFF), stack.peek()); // BINPUT
                case 'r' -> memo.put(Integer.toUnsignedLong(in.getInt()), stack.peek()); // LONG_BINPUT
                case 'h' -> stack.push(memoized(in.get() & 0xFF)); // BINGET
                case 'j' -> stack.push(memoized(Integer.toUnsignedLong(in.getInt()))); // LONG_BINGET
                case 't' -> stack.push(List.copyOf(popToMark())); // TUPLE
                case 0x85 -> stack.push(List.of(stack.pop())); // TUPLE1
                case 0x86 -> { // TUPLE2
                    Object b = stack.pop();
                    stack.push(List.of(stack.pop(), b));
                }
                case 0x87 -> { // TUPLE3
                    Object c = stack.pop(), b = stack.pop();
                    stack.push(List.of(stack.pop(), b, c));
                }
                case 'c' -> stack.push(global(line() + "." + line())); // GLOBAL
                case 'Q' -> stack.push(persistent(stack.pop())); // BINPERSID
                case 'R' -> { // REDUCE
                    List<?> args = (List<?>) stack.pop();
                    stack.push(call((Global) stack.pop(), args));
                }
                case 's' -> { // SETITEM
                    Object value = stack.pop(), key = stack.pop();
                    dict(stack.peek()).put(key, value);
                }
                case 'u' -> { // SETITEMS
                    List<Object> items = popToMark();
                    Map<Object, Object> dict = dict(stack.peek());
                    for (int i = 0; i + 1 < items.size(); i += 2) dict.put(items.get(i), items.get(i + 1));
                }
                case 'b' -> { // BUILD: a state_dict's OrderedDict carries _metadata (module versions), not needed
                    stack.pop();
                    dict(stack.peek());
                }
                default -> throw malformed(String.format("uses pickle opcode 0x%02x at byte %d, which a torch state "
                        + "dict does not need; refusing to interpret it", op, in.position() - 1));
            }
        }
    }

    private Global global(String name) {
        if (!ALLOWED.contains(name)) {
            throw new ModelLoadException(file, "refusing to load: the pickle " + entry + " references the global "
                    + name + ", which a PyTorch state dict does not use (a pickle can run arbitrary code; allowed: "
                    + String.join(", ", ALLOWED) + ")");
        }
        return new Global(name);
    }

    private StorageRef persistent(Object id) {
        if (id instanceof List<?> t && t.size() == 5 && "storage".equals(t.get(0)) && t.get(1) instanceof Global type
                && STORAGES.containsKey(type.name) && t.get(2) instanceof String key && t.get(4) instanceof Long elements) {
            return new StorageRef(STORAGES.get(type.name), key, elements);
        }
        throw malformed("has a persistent id " + describe(id) + "; expected ('storage', torch.HalfStorage|"
                + "BFloat16Storage|FloatStorage, key, location, size)");
    }

    private Object call(Global callable, List<?> args) {
        switch (callable.name) {
            case ORDERED_DICT -> {
                if (!args.isEmpty()) throw malformed("calls OrderedDict with arguments");
                return new LinkedHashMap<>();
            }
            case REBUILD_TENSOR -> {
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if (args.size() < 4 || !(args.get(0) instanceof StorageRef storage) || !(args.get(1) instanceof Long offset)) {
                    throw malformed("calls " + REBUILD_TENSOR + " with unexpected arguments " + describe(args));
                }
                return new TensorRef(storage, offset, longs(args.get(2)), longs(args.get(3)));
            }
            case REBUILD_PARAMETER -> {
                if (args.isEmpty() || !(args.getFirst() instanceof TensorRef tensor)) {
                    throw malformed("calls " + REBUILD_PARAMETER + " with unexpected arguments " + describe(args));
                }
                return tensor;
            }
            default -> throw malformed("calls " + callable.name + ", which is a type, not a function");
        }
    }

    private long[] longs(Object tuple) {
        if (!(tuple instanceof List<?> list)) throw malformed("has a tensor size or stride that is not a tuple: " + describe(tuple));
        long[] out = new long[list.size()];
        for (int i = 0; i < out.length; i++) {
            if (!(list.get(i) instanceof Long v)) throw malformed("has a tensor size or stride with a non-integer " + describe(list));
            out[i] = v;
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    private Map<Object, Object> dict(Object target) {
        if (!(target instanceof Map<?, ?>)) throw malformed("sets items on " + describe(target) + ", which is not a dict");
        return (Map<Object, Object>) target;
    }

    private List<Object> popToMark() {
        List<Object> items = new ArrayList<>();
        for (Object o = stack.pop(); o != MARK; o = stack.pop()) items.add(o);
        return items.reversed();
    }

    private Object memoized(long index) {
        Object o = memo.get(index);
        if (o == null) throw malformed("reads memo slot " + index + " before writing it");
        return o;
    }

    private long long1(int length) {
        if (length > 8) throw malformed("has an integer of " + length + " bytes");
        long value = 0;
        for (int i = 0; i < length; i++) value |= (in.get() & 0xFFL) << (8 * i);
        int unused = 64 - 8 * length; // sign-extend the little-endian two's complement
        return length == 0 ? 0 : (value << unused) >> unused;
    }

    private String utf8(int length) {
        if (length < 0 || length > in.remaining()) throw malformed("has a string longer than the pickle");
        byte[] bytes = new byte[length];
        in.get(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    private String line() {
        int start = in.position();
        while (in.get() != '\n') {
            if (in.position() - start > 256) throw malformed("has a GLOBAL name longer than 256 bytes");
        }
        return new String(in.array(), start, in.position() - 1 - start, StandardCharsets.US_ASCII);
    }

    private static String describe(Object o) {
        String s = o == NONE ? "None" : o instanceof Global g ? g.name : String.valueOf(o);
        return s.length() > 120 ? s.substring(0, 120) + "..." : s;
    }

    private ModelLoadException malformed(String problem) {
        return new ModelLoadException(file, "pickle " + entry + " " + problem);
    }
}
