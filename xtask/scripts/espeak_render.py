"""Renders words to 16-bit mono WAV files with the eSpeak NG library of the PyPI package
`espeakng-loader` (its shared library and voice data, unpacked under .assets/), through ctypes:
no espeak-ng program, no root, nothing installed system-wide.

Usage: python3 espeak_render.py LIBRARY DATA_DIR RATE OUT_DIR VOICE NAME WORD [VOICE NAME WORD ...]

Each triple writes WORD, spoken by VOICE at RATE words per minute, to OUT_DIR/VOICE/NAME.wav
(the sample rate is the library's, 22050 Hz); each file is written beside its target and renamed
into place. The bytes depend on the library, the data, and the triples before it in the same
call (eSpeak NG keeps state between utterances): the same call always writes the same files, so
render a fixed list per call (`cargo xtask setup` renders one voice's ten digits per call).
"""

import ctypes
import os
import sys
import wave

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE = 1
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
EE_OK = 0

class Voice(ctypes.Structure):
    """espeak_VOICE: a voice chosen by its properties."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def main(argv):
    if len(argv) < 5 or (len(argv) - 5) % 3 != 0:
        sys.exit(__doc__)
    library, data_dir, rate, out_dir = argv[1], argv[2], int(argv[3]), argv[4]
    jobs = [tuple(argv[i:i + 3]) for i in range(5, len(argv), 3)]
    lib = ctypes.CDLL(library)
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(Voice)]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]
    libc = ctypes.CDLL(None)
    samples = []

    def collect(wav, count, _events):
        if wav and count > 0:
            samples.append(ctypes.string_at(wav, count * 2))
        return 0

    callback = CALLBACK(collect)
    # espeak-ng-data's parent directory is what espeak_Initialize takes as its path.
    sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, os.path.dirname(os.path.abspath(data_dir)).encode(), 0)
    if sample_rate <= 0:
        sys.exit(f"espeak_Initialize failed for the data in {data_dir}")
    lib.espeak_SetSynthCallback(callback)
    for voice, name, word in jobs:
        target = os.path.join(out_dir, voice, name + ".wav")
        # As the espeak-ng program does: a voice by its name, else by its language ("en-gb+f2").
        if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            wanted = Voice(languages=voice.encode())
            if lib.espeak_SetVoiceByProperties(ctypes.byref(wanted)) != EE_OK:
                sys.exit(f"espeak: no voice named {voice!r} and none of that language in {data_dir}")
        lib.espeak_SetParameter(ESPEAK_RATE, rate, 0)
        # Breath noise draws from eSpeak NG's own generator, seeded from the clock at start-up, and
        # other noise from the C library's rand(): both get a fixed seed for every file.
        lib.espeak_ng_SetRandSeed(1)
        libc.srand(1)
        samples.clear()
        text = word.encode() + b"\0"
        if lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None) != EE_OK:
            sys.exit(f"espeak: cannot synthesise {word!r} with {voice!r}")
        lib.espeak_Synchronize()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = target + ".part"
        with wave.open(partial, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(b"".join(samples))
        os.replace(partial, target)
        print(f"{voice}/{name}.wav")


if __name__ == "__main__":
    main(sys.argv)
